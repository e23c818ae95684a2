"""Streams built on the one reader: a shuffled stream for training and a one-pass summary."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tig_batch.data._format import DatasetInfo, iter_batches, open_dataset

_READ_BATCH = 512


@dataclass(frozen=True)
class DatasetSummary:
    """What one pass over a dataset tells: counts, per-channel pixel statistics, a hash.

    ``sha256`` hashes the decoded images and labels in reading order, so it identifies the
    data whatever the shard sizes or compression.
    """

    count: int
    class_counts: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_min: float
    pixel_max: float
    sha256: str


def summarize(source: str | Path | DatasetInfo) -> DatasetSummary:
    """Read the dataset once and summarise it (float64 accumulation)."""
    info = source if isinstance(source, DatasetInfo) else open_dataset(source)
    # Images and labels go to separate digests: batch boundaries follow the shards, and the
    # hash must not.
    image_digest, label_digest = hashlib.sha256(), hashlib.sha256()
    c = info.shape[0]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    counts = np.zeros(max(info.num_classes, 1), dtype=np.int64)
    lo, hi = np.inf, -np.inf
    for batch in iter_batches(info, _READ_BATCH):
        x = batch.images.astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        total_sq += (x * x).sum(axis=(0, 2, 3))
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        image_digest.update(np.ascontiguousarray(batch.images, dtype="<f4").tobytes())
        if batch.labels is not None:
            label_digest.update(batch.labels.astype("<i8").tobytes())
            if len(counts) < int(batch.labels.max()) + 1:
                counts = np.pad(counts, (0, int(batch.labels.max()) + 1 - len(counts)))
            counts += np.bincount(batch.labels, minlength=len(counts))
    pixels = info.count * info.shape[1] * info.shape[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
    return DatasetSummary(
        count=info.count,
        class_counts=tuple(int(k) for k in counts) if info.has_labels else (),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        pixel_min=lo,
        pixel_max=hi,
        sha256=hashlib.sha256(image_digest.digest() + label_digest.digest()).hexdigest(),
    )


def iter_shuffled(
    source: str | Path | DatasetInfo,
    batch_size: int,
    *,
    seed: int,
    buffer_size: int = 8192,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (images, labels) batches in a seeded shuffled order, streaming.

    Shards are visited in a seeded order and images pass through a shuffle buffer of
    ``buffer_size`` images, so memory stays bounded; a dataset no larger than the buffer is
    shuffled completely. The same seed gives the same batches.
    """
    info = source if isinstance(source, DatasetInfo) else open_dataset(source)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(info.shards))
    buf_x: list[np.ndarray] = []
    buf_y: list[np.ndarray] = []
    held = 0

    def drain(keep: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        nonlocal buf_x, buf_y, held
        x = np.concatenate(buf_x)
        y = np.concatenate(buf_y) if info.has_labels else None
        perm = rng.permutation(len(x))
        n_out = (len(x) - keep) // batch_size * batch_size if keep else len(x)
        for start in range(0, n_out, batch_size):
            idx = perm[start : start + batch_size]
            yield x[idx], None if y is None else y[idx]
        rest = perm[n_out:]
        buf_x = [x[rest]]
        buf_y = [y[rest]] if y is not None else []
        held = len(rest)

    for k in order:
        shard = info.shards[int(k)]
        sub = replace(info, shards=(shard,), count=shard.count)
        for batch in iter_batches(sub, _READ_BATCH):
            buf_x.append(batch.images)
            if batch.labels is not None:
                buf_y.append(batch.labels)
            held += len(batch)
            if held >= buffer_size + batch_size:
                yield from drain(keep=buffer_size)
    if held:
        yield from drain(keep=0)
