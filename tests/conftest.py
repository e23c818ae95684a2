"""Shared fixtures: tiny real data (scikit-learn's 8x8 digits) as shards, a private cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tig_batch.data import Records, ShardSpec, write_shards


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the user's ~/.cache; share one cache across the session (mnist-5k is 1 s)."""
    monkeypatch.setenv("TIG_BATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits, 1x8x8 uint8, and their labels."""
    return _digits()


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory: pytest.TempPathFactory, digits) -> tuple[Path, Path]:
    """(train directory of 3 shards with 1,500 digits, test file with the other 297)."""
    images, labels = digits
    root = tmp_path_factory.mktemp("digits")
    names = tuple(str(i) for i in range(10))
    train = write_shards(
        [Records(images[:1500], labels[:1500])], root / "train",
        ShardSpec((1, 8, 8), class_names=names, split="train", source="sklearn-digits"),
        shard_size=600,
    )  # fmt: skip
    test = write_shards(
        [Records(images[1500:], labels[1500:])], root / "test.h5",
        ShardSpec((1, 8, 8), class_names=names, split="test", source="sklearn-digits"),
    )  # fmt: skip
    return train.path, test.path
