"""The HDF5 shard format, version 1: attributes, validation, and the one batch reader.

Every consumer (training, evaluation, explanation, export checks) reads images through
:func:`iter_batches`, so validation and error messages live in one place. See
``docs/format.md`` for the layout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tig_batch.errors import DataError

FORMAT_NAME = "tig-batch-shards"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".h5"
IMAGE_DTYPES = ("uint8", "float32")
# Read-side chunk cache: large enough to hold a few chunks so that consecutive batches
# drawn from the same chunk decompress it once.
_CHUNK_CACHE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ShardInfo:
    """One shard file of a dataset and how many images it holds."""

    path: Path
    count: int


@dataclass(frozen=True)
class DatasetInfo:
    """A validated dataset: its shards in reading order and the attributes they share.

    ``value_range`` is the range of the decoded float32 pixels the reader returns: uint8
    storage is a quantisation of that range (``lo + (hi - lo) * q / 255``), float32 storage
    holds the values themselves.
    """

    path: Path
    shards: tuple[ShardInfo, ...]
    shape: tuple[int, int, int]
    count: int
    dtype: str
    value_range: tuple[float, float]
    channel_layout: str
    class_names: tuple[str, ...]
    split: str
    source: str
    has_labels: bool
    has_ids: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Batch:
    """A run of consecutive images from one shard, decoded to float32 in the value range.

    ``start`` is the index of the first image within ``shard``, so results can be written
    back beside the input shard by shard. ``ids`` are the stored ids, or the position in the
    dataset when the shard stores none. A batch of selected images (:func:`iter_rows`) has its
    positions in the shard in ``rows`` and its index among the selected in ``start``.
    """

    images: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray
    shard: Path
    start: int
    rows: np.ndarray | None = None  # where the images are in the shard, when not from start on

    def __len__(self) -> int:
        return int(self.images.shape[0])


def shard_paths(source: str | Path) -> list[Path]:
    """The shard files of ``source`` (one ``.h5`` file, or a directory of them) in order."""
    path = Path(source)
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix == SHARD_SUFFIX and p.is_file())
        if not shards:
            raise DataError(f"{path}: directory holds no {SHARD_SUFFIX} shard files")
        return shards
    if path.is_file():
        return [path]
    raise DataError(f"{path}: no such dataset file or directory")


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    except OSError as exc:
        raise DataError(
            f"{path}: not a readable HDF5 file (corrupt or truncated?): {_short(exc)}"
        ) from None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _attr_str(f: h5py.File, path: Path, name: str, default: str | None = None) -> str:
    if name not in f.attrs:
        if default is not None:
            return default
        raise DataError(f"{path}: missing file attribute {name!r}")
    value = f.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    return str(value)


def _read_attrs(f: h5py.File, path: Path) -> dict:
    fmt = _attr_str(f, path, "format", default="")
    if fmt != FORMAT_NAME:
        raise DataError(
            f"{path}: not a tig-batch shard (attribute format={fmt!r}, expected "
            f"{FORMAT_NAME!r}); convert it with `tig-batch ingest`"
        )
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: shard format version {version} is not supported (this tig-batch reads "
            f"version {FORMAT_VERSION})"
        )
    try:
        lo, hi = (float(v) for v in np.asarray(f.attrs["value_range"]).reshape(-1))
        class_names = tuple(json.loads(_attr_str(f, path, "class_names", default="[]")))
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: bad value_range or class_names attribute: {exc}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(f"{path}: value_range [{lo}, {hi}] is not a finite, increasing pair")
    return {
        "value_range": (lo, hi),
        "channel_layout": _attr_str(f, path, "channel_layout"),
        "class_names": class_names,
        "split": _attr_str(f, path, "split", default=""),
        "source": _attr_str(f, path, "source", default=""),
    }


def _validate_shard(f: h5py.File, path: Path) -> tuple[dict, ShardInfo, tuple, str, bool, bool]:
    attrs = _read_attrs(f, path)
    if "images" not in f or not isinstance(f["images"], h5py.Dataset):
        raise DataError(f"{path}: missing dataset 'images'")
    images = f["images"]
    if images.ndim != 4:
        raise DataError(
            f"{path}: dataset 'images' has rank {images.ndim} with shape {images.shape}; "
            "expected rank 4 (N, C, H, W)"
        )
    if images.dtype.name not in IMAGE_DTYPES:
        raise DataError(
            f"{path}: dataset 'images' has dtype {images.dtype}; expected uint8 or float32"
        )
    n = int(images.shape[0])
    if n == 0:
        raise DataError(f"{path}: dataset 'images' is empty (an empty shard)")
    has_labels = "labels" in f
    if has_labels:
        _validate_labels(f["labels"], path, n, len(attrs["class_names"]))
    has_ids = "ids" in f
    if has_ids and tuple(f["ids"].shape) != (n,):
        raise DataError(f"{path}: dataset 'ids' has shape {f['ids'].shape}; expected ({n},)")
    if images.dtype.name == "float32":
        lo, hi = attrs["value_range"]
        pmin, pmax = f.attrs.get("pixel_min"), f.attrs.get("pixel_max")
        if pmin is not None and pmax is not None and not (lo <= pmin and pmax <= hi):
            raise DataError(
                f"{path}: dataset 'images' holds pixels in [{pmin}, {pmax}], outside the "
                f"value_range [{lo}, {hi}]"
            )
    shape = tuple(int(s) for s in images.shape[1:])
    return attrs, ShardInfo(path, n), shape, images.dtype.name, has_labels, has_ids


def _validate_labels(labels: h5py.Dataset, path: Path, n: int, num_classes: int) -> None:
    if tuple(labels.shape) != (n,):
        raise DataError(f"{path}: dataset 'labels' has shape {labels.shape}; expected ({n},)")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: dataset 'labels' has dtype {labels.dtype}; expected int64")
    try:
        values = labels[()]
    except OSError as exc:
        raise DataError(f"{path}: cannot read dataset 'labels' (corrupt?): {_short(exc)}") from None
    bad = (values < 0) | (values >= num_classes) if num_classes else values < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        limit = f"[0, {num_classes - 1}]" if num_classes else ">= 0"
        raise DataError(
            f"{path}: dataset 'labels' holds {int(values[i])} at index {i}, outside {limit}"
        )


def open_dataset(source: str | Path) -> DatasetInfo:
    """Open and validate a dataset (one shard file or a directory of shards).

    Checks, for every shard and before any pixel is read: the format name and version,
    the ``images`` rank and dtype, that shards agree on shape and attributes, and that
    every label lies in range. Raises :class:`DataError` naming the file and dataset.
    """
    paths = shard_paths(source)
    infos: list[ShardInfo] = []
    first: tuple | None = None
    for path in paths:
        with _open(path) as f:
            attrs, info, shape, dtype, has_labels, has_ids = _validate_shard(f, path)
        current = (attrs, shape, dtype, has_labels, has_ids)
        if first is None:
            first = current
        elif current != first:
            raise DataError(
                f"{path}: shard disagrees with {paths[0].name} on shape, dtype, attributes "
                "or which datasets it holds; all shards of a dataset must match"
            )
        infos.append(info)
    assert first is not None  # shard_paths never returns an empty list
    attrs, shape, dtype, has_labels, has_ids = first
    return DatasetInfo(
        path=Path(source),
        shards=tuple(infos),
        shape=shape,
        count=sum(s.count for s in infos),
        dtype=dtype,
        has_labels=has_labels,
        has_ids=has_ids,
        **attrs,
    )


def decode(stored: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Stored pixels to float32 in ``value_range`` (uint8 is a quantisation of the range).

    uint8 ``q`` decodes to ``lo + (hi - lo) * q / 255`` computed in float64 and rounded once,
    so [0, 1] data reads back as exactly ``float32(q / 255)``.
    """
    if stored.dtype == np.uint8:
        lo, hi = value_range
        out = stored.astype(np.float64)
        out *= (hi - lo) / 255.0
        if lo != 0.0:
            out += lo
        return out.astype(np.float32)
    return np.asarray(stored, dtype=np.float32)


def iter_batches(
    source: str | Path | DatasetInfo,
    batch_size: int,
    *,
    labels: bool = True,
    allow_non_finite: bool = False,
) -> Iterator[Batch]:
    """Yield batches of at most ``batch_size`` images across the shards, in order.

    A batch never spans two shards; only the requested slice is read from disk, so memory
    stays at one batch whatever the shard size. Float32 pixels are checked for NaN, Inf and
    the value range as they are read; ``allow_non_finite`` lets NaN and Inf through (for
    callers that flag and skip such images) while still checking the finite pixels' range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    info = source if isinstance(source, DatasetInfo) else open_dataset(source)
    offset = 0
    for shard in info.shards:
        with _open(shard.path) as f:
            for start in range(0, shard.count, batch_size):
                rows = np.arange(start, min(start + batch_size, shard.count))
                yield _read(f, info, shard.path, rows, offset, labels, allow_non_finite, start)
        offset += shard.count


def iter_rows(
    info: DatasetInfo,
    shard: Path,
    rows: np.ndarray,
    batch_size: int,
    *,
    offset: int = 0,
    labels: bool = True,
    allow_non_finite: bool = False,
) -> Iterator[Batch]:
    """Yield the images at ``rows`` (increasing) of one ``shard`` of ``info``, ``batch_size``
    at a time, checked as :func:`iter_batches` checks them.

    A batch's ``start`` is its first image's index among ``rows`` and its ``rows`` are where
    its images are in the shard; ``offset`` is the shard's first image's position in the
    dataset (the ids of images without stored ids).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = np.asarray(rows, dtype=np.int64)
    with _open(shard) as f:
        for start in range(0, len(rows), batch_size):
            batch = _read(
                f, info, shard, rows[start : start + batch_size], offset, labels,
                allow_non_finite, start,
            )  # fmt: skip
            yield dataclasses.replace(batch, rows=rows[start : start + batch_size])


def _read(
    f: h5py.File,
    info: DatasetInfo,
    path: Path,
    rows: np.ndarray,
    offset: int,
    labels: bool,
    allow_non_finite: bool,
    start: int,
) -> Batch:
    """One batch: the images at ``rows`` (increasing) of the open shard ``f``, decoded and
    checked."""
    contiguous = len(rows) > 0 and rows[-1] - rows[0] == len(rows) - 1
    index = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
    try:
        stored = f["images"][index]
        y = f["labels"][index].astype(np.int64) if labels and info.has_labels else None
        ids = f["ids"][index] if info.has_ids else offset + rows
    except (OSError, TypeError) as exc:
        raise DataError(
            f"{path}: cannot read dataset 'images' rows {rows[0]}:{rows[-1] + 1} "
            f"(corrupt or truncated?): {_short(exc)}"
        ) from None
    images = decode(stored, info.value_range)
    if stored.dtype != np.uint8:
        _check_pixels(images, path, rows, *info.value_range, allow_non_finite)
    if ids.dtype.kind in "OS":
        ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in ids])
    return Batch(images=images, labels=y, ids=ids, shard=path, start=start)


def _check_pixels(
    images: np.ndarray, path: Path, rows: np.ndarray, lo: float, hi: float, allow_non_finite: bool
) -> None:
    finite = np.isfinite(images)
    if not finite.all() and not allow_non_finite:
        i = int(np.flatnonzero(~finite.reshape(len(images), -1).all(axis=1))[0])
        raise DataError(
            f"{path}: dataset 'images' has NaN or Inf pixels in image {rows[i]} "
            "(explain --on-bad-image skip flags and skips such images)"
        )
    bad = finite & ((images < lo) | (images > hi))
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(len(images), -1).any(axis=1))[0])
        raise DataError(
            f"{path}: dataset 'images' image {rows[i]} has pixels outside the value_range "
            f"[{lo}, {hi}]"
        )
