"""Expected Gradients' reference images: which dataset, how many, read once per run.

A job names its reference data (:class:`ReferenceData`: a shard file, a directory of shards
or a built-in dataset, whose train split is meant); :func:`load_references` reads at most
``limit`` images of it, evenly spaced over the whole dataset so that a dataset sorted by
class still gives every class, and identifies them by the sha256 of their pixels, which the
outputs record so that a resume can tell another reference set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tig_batch.data import DatasetInfo, iter_rows, open_dataset, resolve_dataset
from tig_batch.errors import DataError

DEFAULT_REFERENCE_LIMIT = 1000


@dataclass(frozen=True)
class ReferenceData:
    """The images Expected Gradients draws its base-points from: ``source`` is a shard file,
    a directory of shards, or a built-in dataset name (its ``train`` split), e.g. the data
    the classifier was trained on. At most ``limit`` images are kept in memory, evenly spaced
    over the dataset (all of them when it holds no more); they cost ``limit x C x H x W x 4``
    bytes (3 MB for 1,000 MNIST digits)."""

    source: str | Path
    limit: int = DEFAULT_REFERENCE_LIMIT

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"the reference limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class References:
    """Reference images read for a run: ``images`` (N, C, H, W) float32 in the value range,
    the dataset ``path`` they came from, and ``record``, their identity in the job record
    (the dataset's file or directory ``name``, ``count`` and ``sha256`` of the pixels)."""

    images: np.ndarray = field(repr=False)
    path: Path
    record: dict[str, Any]


def reference_rows(count: int, limit: int) -> np.ndarray:
    """The dataset positions kept: all when ``count <= limit``, else ``limit`` evenly spaced
    from the first image to the last."""
    if count <= limit:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def load_references(
    data: ReferenceData, shape: tuple[int, ...], value_range: tuple[float, float]
) -> References:
    """Read ``data``'s reference images, refusing a dataset whose images do not fit the
    bundle (``shape``, ``value_range``) with an error naming it."""
    source = Path(data.source)
    info = open_dataset(source) if source.exists() else resolve_dataset(data.source, "train")
    _check(info, shape, value_range)
    wanted = reference_rows(info.count, data.limit)
    parts, first = [], 0
    for shard in info.shards:
        inside = wanted[(wanted >= first) & (wanted < first + shard.count)] - first
        if len(inside):
            batches = iter_rows(info, shard.path, inside, len(inside), offset=first, labels=False)
            parts.extend(batch.images for batch in batches)
        first += shard.count
    images = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    digest = hashlib.sha256(images.tobytes()).hexdigest()
    record = {"name": info.path.name, "count": len(images), "sha256": digest}
    return References(images, info.path, record)


def _check(info: DatasetInfo, shape: tuple[int, ...], value_range: tuple[float, float]) -> None:
    if tuple(info.shape) != tuple(shape):
        raise DataError(
            f"{info.path}: reference images are {tuple(info.shape)} but the bundle expects "
            f"{tuple(shape)}"
        )
    if tuple(info.value_range) != tuple(value_range):
        raise DataError(
            f"{info.path}: reference value range {tuple(info.value_range)} differs from the "
            f"bundle's {tuple(value_range)}"
        )
