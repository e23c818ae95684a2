"""Write arrays into HDF5 shards (format version 1), validating as they go.

Shards are written under temporary ``.partial`` names and renamed only once every shard is
complete, so a failure part-way (bad pixels in the last file, a full disk) leaves whatever the
output already held untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tig_batch._h5write import HDF5Output
from tig_batch.data._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SHARD_SUFFIX,
    DatasetInfo,
    open_dataset,
)
from tig_batch.errors import DataError

COMPRESSIONS = ("gzip", "lzf", "none")
_PARTIAL = ".partial"
_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ShardSpec:
    """What every shard of a dataset shares. ``shape`` is (C, H, W)."""

    shape: tuple[int, int, int]
    dtype: str = "uint8"
    value_range: tuple[float, float] = (0.0, 1.0)
    channel_layout: str = "L"
    class_names: tuple[str, ...] = ()
    split: str = ""
    source: str = ""


@dataclass(frozen=True)
class Records:
    """A block of images (N, C, H, W) with optional labels (N,) and ids (N,)."""

    images: np.ndarray
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None


def channel_layout_for(channels: int) -> str:
    """The default channel layout name for a channel count: L, RGB, or C<n>."""
    return {1: "L", 3: "RGB"}.get(channels, f"C{channels}")


def _check_records(rec: Records, spec: ShardSpec, origin: str, seen: int) -> Records:
    images = np.asarray(rec.images)
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.shape:
        raise DataError(
            f"{origin}: images at {seen} have shape {images.shape}; expected (N, "
            f"{', '.join(map(str, spec.shape))})"
        )
    if spec.dtype == "uint8":
        if images.dtype != np.uint8:
            raise DataError(f"{origin}: images have dtype {images.dtype}; expected uint8")
    else:
        if images.dtype.kind != "f":
            raise DataError(f"{origin}: images have dtype {images.dtype}; expected float")
        images = images.astype(np.float32, copy=False)
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if not finite.all():
            i = seen + int(np.flatnonzero(~finite)[0])
            raise DataError(f"{origin}: image {i} has NaN or Inf pixels")
        lo, hi = spec.value_range
        inside = ((images >= lo) & (images <= hi)).reshape(len(images), -1).all(axis=1)
        if not inside.all():
            i = seen + int(np.flatnonzero(~inside)[0])
            raise DataError(
                f"{origin}: image {i} has pixels outside the value range [{lo}, {hi}]; "
                "pass the data's real range (--value-range LO,HI)"
            )
    labels = rec.labels
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise DataError(
                f"{origin}: labels have shape {labels.shape} and dtype {labels.dtype}; "
                f"expected ({len(images)},) integers"
            )
        labels = labels.astype(np.int64)
        k = len(spec.class_names)
        bad = (labels < 0) | (labels >= k) if k else labels < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            limit = f"[0, {k - 1}]" if k else ">= 0"
            raise DataError(
                f"{origin}: label {int(labels[i])} of image {seen + i} is outside {limit}"
            )
    ids = None if rec.ids is None else np.asarray(rec.ids)
    if ids is not None and ids.shape != (len(images),):
        raise DataError(f"{origin}: ids have shape {ids.shape}; expected ({len(images)},)")
    return Records(images, labels, ids)


class _ShardFile:
    """One shard being written under its ``.partial`` name (a full disk raises DataError)."""

    def __init__(self, path: Path, spec: ShardSpec, first: Records, compression: str) -> None:
        self.path = path
        final = path.with_name(path.name[: -len(_PARTIAL)])
        self.output = HDF5Output(path, final, track_order=True)
        self.f = self.output.file
        c, h, w = spec.shape
        itemsize = np.dtype(spec.dtype).itemsize
        chunk_n = max(1, _CHUNK_BYTES // (c * h * w * itemsize))
        opts: dict = {}
        if compression != "none":
            opts = {"compression": compression, "shuffle": True}
            if compression == "gzip":
                opts["compression_opts"] = 4
        self.images = self.f.create_dataset(
            "images", (0, c, h, w), spec.dtype, maxshape=(None, c, h, w),
            chunks=(chunk_n, c, h, w), **opts,
        )  # fmt: skip
        self.labels = None
        if first.labels is not None:
            self.labels = self.f.create_dataset(
                "labels", (0,), "int64", maxshape=(None,), chunks=(max(chunk_n, 1024),), **opts
            )
        self.ids = None
        if first.ids is not None:
            id_dtype = "int64" if first.ids.dtype.kind in "iu" else h5py.string_dtype()
            self.ids = self.f.create_dataset(
                "ids", (0,), id_dtype, maxshape=(None,), chunks=(max(chunk_n, 1024),), **opts
            )
        attrs = self.f.attrs
        attrs["format"] = FORMAT_NAME
        attrs["format_version"] = FORMAT_VERSION
        attrs["value_range"] = np.asarray(spec.value_range, dtype=np.float64)
        attrs["channel_layout"] = spec.channel_layout
        attrs["class_names"] = json.dumps(list(spec.class_names))
        attrs["split"] = spec.split
        attrs["source"] = spec.source
        self.count = 0
        self.pmin, self.pmax = np.inf, -np.inf

    def append(self, rec: Records) -> None:
        n = len(rec.images)
        a, b = self.count, self.count + n
        self.images.resize(b, axis=0)
        self.images[a:b] = rec.images
        for ds, values in ((self.labels, rec.labels), (self.ids, rec.ids)):
            if (ds is None) != (values is None):
                raise DataError(f"{self.path}: some records carry labels or ids and some do not")
            if ds is not None:
                ds.resize(b, axis=0)
                ds[a:b] = (
                    values.astype(str).astype(object) if values.dtype.kind in "USO" else values
                )
        if rec.images.dtype != np.uint8:
            self.pmin = min(self.pmin, float(rec.images.min()))
            self.pmax = max(self.pmax, float(rec.images.max()))
        self.count = b
        self.output.check()

    def close(self) -> None:
        if self.images.dtype != np.uint8 and self.count:
            self.f.attrs["pixel_min"] = self.pmin
            self.f.attrs["pixel_max"] = self.pmax
        self.output.close()


def _prepare_output(output: Path, overwrite: bool) -> tuple[Path, list[Path]]:
    """Create the output directory; return it and the shards a successful write replaces."""
    single = output.suffix == SHARD_SUFFIX
    directory = output.parent if single else output
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".tig-batch-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DataError(
            f"{directory}: cannot write to the output directory ({exc.strerror or exc}); "
            "choose another --output"
        ) from None
    existing = [output] if single and output.exists() else []
    if not single:
        existing = sorted(directory.glob(f"*{SHARD_SUFFIX}"))
    # what a killed run of this writer left: never data, only debris
    stale = [output.with_name(output.name + _PARTIAL)] if single else []
    for path in stale or directory.glob(f"*{SHARD_SUFFIX}{_PARTIAL}"):
        path.unlink(missing_ok=True)
    if existing and not overwrite:
        raise DataError(
            f"{output}: already holds shards ({existing[0].name}); pass --overwrite to "
            "replace them, or choose another --output"
        )
    return directory, existing


def write_shards(
    records: Iterable[Records],
    output: str | Path,
    spec: ShardSpec,
    *,
    shard_size: int = 10_000,
    compression: str = "gzip",
    overwrite: bool = False,
    origin: str = "input",
    on_progress: Callable[[int], None] | None = None,
) -> DatasetInfo:
    """Write ``records`` as shards and return the validated dataset.

    ``output`` ending in ``.h5`` writes one file; anything else is a directory of shards
    named ``<split>-00000.h5``, each holding at most ``shard_size`` images. ``origin`` names
    the input in error messages.
    """
    if compression not in COMPRESSIONS:
        raise DataError(f"compression must be one of {', '.join(COMPRESSIONS)}: {compression!r}")
    if spec.dtype not in ("uint8", "float32"):
        raise DataError(f"shard dtype must be uint8 or float32, not {spec.dtype!r}")
    if shard_size < 1:
        raise DataError(f"shard size must be >= 1, got {shard_size}")
    output = Path(output)
    single = output.suffix == SHARD_SUFFIX
    directory, existing = _prepare_output(output, overwrite)
    stem = spec.split or "data"
    written: list[Path] = []
    current: _ShardFile | None = None
    seen = 0
    try:
        for raw in records:
            rec = _check_records(raw, spec, origin, seen)
            pos = 0
            while pos < len(rec.images):
                if current is None:
                    name = output.name if single else f"{stem}-{len(written):05d}{SHARD_SUFFIX}"
                    path = directory / (name + _PARTIAL)
                    written.append(path)
                    current = _ShardFile(path, spec, rec, compression)
                room = len(rec.images) - pos if single else shard_size - current.count
                take = min(room, len(rec.images) - pos)
                current.append(_slice(rec, pos, pos + take))
                pos += take
                if not single and current.count >= shard_size:
                    current.close()
                    current = None
            seen += len(rec.images)
            if on_progress is not None:
                on_progress(len(rec.images))
        if current is not None:
            current.close()
            current = None
        if seen == 0:
            raise DataError(f"{origin}: no images to write")
    except BaseException:
        if current is not None:
            current.output.discard()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    _publish(written, existing)
    return open_dataset(output)


def _publish(written: list[Path], existing: list[Path]) -> None:
    """Rename the complete ``.partial`` shards into place, replacing what the output held."""
    finals = [p.with_name(p.name[: -len(_PARTIAL)]) for p in written]
    try:
        for old in existing:
            if old not in finals:
                old.unlink()
        for tmp, final in zip(written, finals, strict=True):
            os.replace(tmp, final)
    except OSError as error:
        for path in written:
            path.unlink(missing_ok=True)
        raise DataError(f"{error.filename}: cannot replace ({error.strerror})") from None


def _slice(rec: Records, a: int, b: int) -> Records:
    return Records(
        rec.images[a:b],
        None if rec.labels is None else rec.labels[a:b],
        None if rec.ids is None else rec.ids[a:b],
    )
