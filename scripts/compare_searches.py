"""Compare base-point search settings on the same images: cost, mean ``mu`` and output gap.

Every search runs on the same images and tangent spaces; ``mu`` and the output gap are
measured on the final attribution (``--n-steps`` nodes, as ``tig-batch explain`` computes it),
the gap as a fraction of the zero base-point's. Prints a Markdown table.

    python scripts/compare_searches.py BUNDLE --images 100
    python scripts/compare_searches.py BUNDLE --search "mine=damping=0.5,min_gap=0.25"

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
from tig_batch.backends import Runtime, load_bundle
from tig_batch.data import iter_batches, resolve_dataset
from tig_batch.engine import explained_outputs, resolve_target

VARIANTS = {
    "surrogate, 60 steps of 2 nodes, min_gap 0.5 (the default)": "",
    "surrogate, 100 steps": "n_iterations=100",
    "surrogate, paper mode (min_gap 0)": "min_gap=0",
    "projection, 60 steps of 2 nodes, min_gap 0.5": "optimizer=projection",
    "projection, paper mode": "optimizer=projection,min_gap=0",
    "ascent, 200 steps of 4 nodes, lr 2, min_gap 0.5": (
        "optimizer=ascent,n_iterations=200,n_steps=4,lr=2"
    ),
    "ascent, 50 steps of 16 nodes, paper mode": (
        "optimizer=ascent,n_iterations=50,n_steps=16,min_gap=0"
    ),
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
    bundle = load_bundle(args.bundle, Runtime(args.backend))
    data = resolve_dataset(args.data, "test") if not Path(args.data).exists() else args.data
    images = torch.from_numpy(next(iter_batches(data, args.images, labels=False)).images)
    model, value_range = bundle.classifier, bundle.manifest.input.value_range
    tangent = tangent_space(bundle.manifold, images)
    target = resolve_target(model, images, None)
    f_x = explained_outputs(model, images, target)
    zero_gap = f_x - explained_outputs(model, torch.full_like(images, value_range[0]), target)

    print(f"{len(images)} images; mu and gap of the final {args.n_steps}-node IG\n")
    print(
        "| search | evaluations / image | mean `mu` | p10 `mu` | mean gap / zero's gap | "
        "images keeping half of zero's gap | flagged | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, text in variants.items():
        search = parse_search(text)
        start = time.perf_counter()
        found = optimal_baselines(model, images, tangent, target, value_range, search)
        final = integrated_gradients(model, images, found.baselines, target, args.n_steps)
        seconds = time.perf_counter() - start
        mu = alignment(final.attributions, tangent.basis)
        gap = f_x - explained_outputs(model, found.baselines, target)
        share = gap / zero_gap
        print(
            f"| {name} | {found.n_gradient_evaluations / len(images):.0f} | "
            f"{mu.nanmean():.3f} | {mu.nanquantile(0.1):.3f} | {share.mean():.2f} | "
            f"{(share >= 0.5).float().mean():.0%} | {found.degenerate.float().mean():.0%} | "
            f"{seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
