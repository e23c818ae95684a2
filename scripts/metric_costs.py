"""What each faithfulness metric and each extra path method costs next to one 50-node IG.

Runs every item on the same images, interleaved, ``--repeats`` times, and prints the best
wall time of each and its ratio to IG from the zero base-point with 50 midpoint nodes, so the
default metric set can be chosen by cost. Metrics score IG-50's attributions.

    python scripts/metric_costs.py BUNDLE TEST_SHARD --n-images 64 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

import tig_batch as tig
from tig_batch.backends import Runtime, load_bundle
from tig_batch.data import iter_batches


def _items(
    model: tig.Classifier, images: torch.Tensor, references: torch.Tensor
) -> dict[str, Callable[[], object]]:
    target = model.logits(images).argmax(1)
    ig = tig.integrated_gradients(model, images, 0.0, target, n_steps=50).attributions

    def ig50(m: tig.Classifier, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tig.integrated_gradients(m, x, 0.0, t, n_steps=50).attributions

    def grad(m: tig.Classifier, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tig.gradient(m, x, t).attributions

    gradients = grad(model, images, target)
    return {
        "ig-50 (unit)": lambda: tig.integrated_gradients(model, images, 0.0, target, 50),
        "deletion+insertion, 20 steps, zero": lambda: tig.deletion_insertion(
            model, images, ig, target
        ),
        "deletion+insertion, 20 steps, blur": lambda: tig.deletion_insertion(
            model, images, ig, target, replacement="blur"
        ),
        "infidelity, 10 samples": lambda: tig.infidelity(model, images, ig, target),
        "sparseness": lambda: tig.sparseness(ig),
        "max-sensitivity of gradient, 10 samples": lambda: tig.sensitivity_max(
            model, grad, images, gradients, target
        ),
        "max-sensitivity of ig-50, 10 samples": lambda: tig.sensitivity_max(
            model, ig50, images, ig, target
        ),
        "guided ig, 200 steps": lambda: tig.guided_integrated_gradients(model, images, 0.0, target),
        "blur ig, 100 steps": lambda: tig.blur_integrated_gradients(model, images, target),
        "expected gradients, 50 samples": lambda: tig.expected_gradients(
            model, images, references, target
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("data", help="a shard or directory of shards (images and references)")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--n-references", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_bundle(args.bundle, Runtime(args.backend, threads=args.threads)).classifier
    batch = next(iter_batches(args.data, args.n_images + args.n_references, labels=False))
    pixels = torch.as_tensor(np.asarray(batch.images, dtype=np.float32))
    images, references = pixels[: args.n_images], pixels[args.n_images :]
    items = _items(model, images, references)
    best = dict.fromkeys(items, float("inf"))
    for _ in range(args.repeats):
        for name, run in items.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    unit = best["ig-50 (unit)"]
    print(f"{len(images)} images, {args.backend}, {args.threads} thread(s), best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:42s} {seconds:8.3f} s  {seconds / unit:6.2f} x ig-50")


if __name__ == "__main__":
    main()
