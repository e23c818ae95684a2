"""Compare base-point search settings on the same images: cost, mean ``mu`` and output gap.

Every search runs on the same images and tangent spaces; ``mu`` and the output gap are
measured on the final attribution (``--n-steps`` nodes, as ``tig-batch explain`` computes it),
the gap as a fraction of the zero base-point's. Prints a Markdown table.

    python scripts/compare_searches.py BUNDLE --images 100
    python scripts/compare_searches.py BUNDLE --search "mine=optimizer=projection,damping=0.3"

Without ``--search`` it compares the variants of the table in docs/method.md. The data must
match the bundle's input shape (default: the mnist-5k test digits).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from tig_batch import (
    BaselineSearch,
    alignment,
    integrated_gradients,
    optimal_baselines,
    tangent_space,
)
from tig_batch.backends import load_bundle
from tig_batch.data import iter_batches, resolve_dataset
from tig_batch.engine._ig import explained_outputs, resolve_target

VARIANTS = {
    "ascent, 50 steps, 16 nodes inside": "optimizer=ascent,n_iterations=50,n_steps=16",
    "ascent, 50 steps, 4 nodes inside": "optimizer=ascent,n_iterations=50,n_steps=4",
    "ascent, 50 steps, 4 nodes, adaptive steps": (
        "optimizer=ascent,n_iterations=50,n_steps=4,adaptive_lr=True"
    ),
    "projection, 10 steps, 4 nodes": "n_iterations=10,n_steps=4,damping=0.5",
    "projection, 20 steps, 4 nodes": "n_iterations=20,n_steps=4,damping=0.5",
    "projection, 20 steps, 16 nodes": "n_iterations=20,n_steps=16,damping=0.5",
    "projection, 50 steps, 4 nodes": "n_iterations=50,n_steps=4,damping=0.5",
    "projection, 50 steps, 4 nodes, damping 0.25": "n_iterations=50,n_steps=4",
    "projection, 60 steps, 2 nodes, damping 0.25 (the default)": "",
    "the default, min gap 0.1": "min_gap=0.1",
}


def parse_search(text: str) -> BaselineSearch:
    """``"key=value,key=value"`` over :class:`BaselineSearch` fields, typed like the defaults."""
    defaults = BaselineSearch()
    changes: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(BaselineSearch)}:
            raise SystemExit(f"unknown BaselineSearch field {key!r}")
        current = getattr(defaults, key)
        if isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            changes[key] = type(current)(value)
        elif current is None:
            changes[key] = float(value)
        else:
            changes[key] = value
    return dataclasses.replace(defaults, **changes)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", default="mnist-5k", help="Dataset path or built-in name.")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n-steps", type=int, default=50, help="Nodes of the final IG.")
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--search", action="append", default=[], metavar="NAME=SETTINGS",
        help='A variant to compare, e.g. "fast=optimizer=projection,n_iterations=10"; repeatable.',
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = dict(v.split("=", 1) for v in args.search) if args.search else VARIANTS
    bundle = load_bundle(args.bundle, args.backend)
    data = resolve_dataset(args.data, "test") if not Path(args.data).exists() else args.data
    images = torch.from_numpy(next(iter_batches(data, args.images, labels=False)).images)
    model, value_range = bundle.classifier, bundle.manifest.input.value_range
    tangent = tangent_space(bundle.manifold, images)
    target = resolve_target(model, images, None)
    f_x = explained_outputs(model, images, target)
    zero_gap = f_x - explained_outputs(model, torch.full_like(images, value_range[0]), target)

    print(f"{len(images)} images; mu and gap of the final {args.n_steps}-node IG\n")
    print(
        "| search | evaluations / image | mean `mu` | mean gap / zero's gap | flagged degenerate "
        "| seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, text in variants.items():
        search = parse_search(text)
        start = time.perf_counter()
        found = optimal_baselines(model, images, tangent, target, value_range, search)
        final = integrated_gradients(model, images, found.baselines, target, args.n_steps)
        seconds = time.perf_counter() - start
        mu = alignment(final.attributions, tangent.basis)
        gap = f_x - explained_outputs(model, found.baselines, target)
        print(
            f"| {name} | {found.n_gradient_evaluations / len(images):.0f} | "
            f"{mu.nanmean():.3f} | {(gap / zero_gap).mean():.2f} | "
            f"{found.degenerate.float().mean():.0%} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
