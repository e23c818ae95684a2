"""Peak memory of `tig-batch explain` does not grow with the dataset: N images vs 10 N.

Runs the same explain command in two fresh processes, on an input of N images and on one of
10 N (the N images repeated), and prints each run's peak RSS and their ratio.

    python scripts/peak_memory.py BUNDLE --images 64 --batch-size 16

The bundle must take 1x28x28 images (mnist-5k's test digits are used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys
from tig_batch.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _input(directory: Path, n_images: int, repeat: int) -> Path:
    import numpy as np

    from tig_batch.data import Records, ShardSpec, iter_batches, resolve_dataset, write_shards

    batch = next(iter_batches(resolve_dataset("mnist-5k", "test"), n_images))
    images = np.tile(np.round(batch.images * 255).astype(np.uint8), (repeat, 1, 1, 1))
    spec = ShardSpec((1, 28, 28), class_names=tuple(map(str, range(10))))
    write_shards([Records(images)], directory, spec, shard_size=max(n_images, 1000))
    return directory


def peak_rss_mib(bundle: Path, source: Path, out: Path, batch_size: int, extra: list[str]) -> float:
    command = [
        sys.executable, "-c", CHILD, "explain", str(bundle), str(source), "-o", str(out),
        "--batch-size", str(batch_size), "-q", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--explain-args", default="--methods tangential,zero,gradient --search-iterations 5",
        help="Further explain options (cheap settings keep the run short).",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        small = _input(root / "small", args.images, 1)
        large = _input(root / "large", args.images, 10)
        extra = args.explain_args.split()
        rss = {
            "small": peak_rss_mib(args.bundle, small, root / "out-small", args.batch_size, extra),
            "large": peak_rss_mib(args.bundle, large, root / "out-large", args.batch_size, extra),
        }
    ratio = rss["large"] / rss["small"]
    print(
        json.dumps({"images": [args.images, 10 * args.images], "peak_rss_mib": rss, "ratio": ratio})
    )


if __name__ == "__main__":
    main()
