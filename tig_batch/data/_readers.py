"""Readers for the formats datasets arrive in: MNIST IDX, CIFAR-10 binary and pickle, FER2013.

Each reader checks the file's structure before yielding data and streams the pixels in
blocks, returning a :class:`Converted` that :func:`tig_batch.data.ingest` writes as shards.
"""

from __future__ import annotations

import csv
import gzip
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from tig_batch.data._safe_pickle import safe_load_pickle
from tig_batch.data._writer import Records
from tig_batch.errors import DataError

BLOCK = 4096  # images per block handed to the shard writer

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
    "fer2013": ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"),
}  # fmt: skip


@dataclass(frozen=True)
class Converted:
    """A dataset read from some input format, ready for the shard writer.

    ``records`` is a one-shot iterator of blocks; ``shape`` is (C, H, W).
    """

    records: Iterator[Records] = field(repr=False)
    shape: tuple[int, int, int]
    dtype: str
    class_names: tuple[str, ...]
    source: str
    value_range: tuple[float, float] = (0.0, 1.0)
    origin: str = ""  # the input as named in error messages


# --- MNIST / Fashion-MNIST IDX -------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    magic = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


def _read_exact(f: IO[bytes], n: int, path: Path, what: str) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt while reading {what}: {exc}") from None
    if len(data) != n:
        raise DataError(f"{path}: truncated: expected {n} more bytes of {what}, found {len(data)}")
    return data


def _idx_header(f: IO[bytes], path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    magic = _read_exact(f, 4, path, "the IDX magic number")
    if magic[:2] != b"\x00\x00" or magic[2] not in _IDX_TYPES or magic[3] == 0:
        raise DataError(
            f"{path}: wrong magic number 0x{magic.hex()}; an IDX file starts with 00 00, a "
            "type byte (08 for uint8) and its rank"
        )
    rank = magic[3]
    dims = struct.unpack(f">{rank}I", _read_exact(f, 4 * rank, path, "the IDX dimensions"))
    return np.dtype(_IDX_TYPES[magic[2]]), dims


def _idx_blocks(f: IO[bytes], path: Path, dtype: np.dtype, dims: tuple[int, ...]):
    per_item = math.prod(dims[1:]) * dtype.itemsize
    with f:
        for start in range(0, dims[0], BLOCK):
            n = min(BLOCK, dims[0] - start)
            data = _read_exact(f, n * per_item, path, f"items {start}..{start + n - 1}")
            yield np.frombuffer(data, dtype=dtype).reshape(n, *dims[1:])
        if _read_exact_or_empty(f, path):
            raise DataError(
                f"{path}: trailing bytes after {dims[0]} items; the header says "
                f"{'x'.join(map(str, dims))}"
            )


def _read_exact_or_empty(f: IO[bytes], path: Path) -> bool:
    try:
        return bool(f.read(1))
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt after the last item: {exc}") from None


def read_idx(
    images: str | Path, labels: str | Path | None = None, *, class_names: Sequence[str] = ()
) -> Converted:
    """MNIST or Fashion-MNIST IDX files (raw or gzip-compressed), labels optional."""
    images = Path(images)
    f = _open_maybe_gzip(images)
    dtype, dims = _idx_header(f, images)
    if len(dims) != 3:
        raise DataError(f"{images}: IDX images have rank {len(dims)}; expected 3 (N, H, W)")
    label_blocks = None
    if labels is not None:
        labels = Path(labels)
        g = _open_maybe_gzip(labels)
        ldtype, ldims = _idx_header(g, labels)
        if len(ldims) != 1 or ldtype.kind not in "iu":
            raise DataError(f"{labels}: IDX labels must be rank 1 integers, found {ldims}")
        if ldims[0] != dims[0]:
            raise DataError(
                f"{labels}: holds {ldims[0]} labels but {images.name} holds {dims[0]} images"
            )
        label_blocks = _idx_blocks(g, labels, ldtype, ldims)
    out_dtype = "uint8" if dtype == np.dtype(">u1") else "float32"

    def records() -> Iterator[Records]:
        for block in _idx_blocks(f, images, dtype, dims):
            y = None if label_blocks is None else next(label_blocks).astype(np.int64)
            yield Records(block.astype(out_dtype)[:, None], y)
        if label_blocks is not None:
            for _ in label_blocks:  # runs the trailing-bytes check
                pass

    return Converted(
        records(), (1, dims[1], dims[2]), out_dtype,
        tuple(class_names) or CLASS_NAMES["mnist"], f"idx:{images.name}", origin=str(images),
    )  # fmt: skip


# --- CIFAR-10 ------------------------------------------------------------------------------

_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10(paths: Sequence[str | Path], *, class_names: Sequence[str] = ()) -> Converted:
    """CIFAR-10 batches in the binary format or the Python-pickle format (auto-detected).

    A pickle is recognised by its first byte (0x80, impossible as a CIFAR-10 label) and read
    only through the restricted loader of :func:`safe_load_pickle`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no CIFAR-10 batch files given")
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")

    def records() -> Iterator[Records]:
        for path in paths:
            with path.open("rb") as f:
                first = f.read(1)
            if first == b"\x80":
                yield _cifar_pickle(path)
            else:
                yield from _cifar_binary(path)

    source = "cifar10:" + ",".join(p.name for p in paths)
    return Converted(
        records(), (3, 32, 32), "uint8", tuple(class_names) or CLASS_NAMES["cifar10"], source,
        origin=str(paths[0].parent),
    )  # fmt: skip


def _cifar_binary(path: Path) -> Iterator[Records]:
    size = path.stat().st_size
    if size == 0 or size % _CIFAR_RECORD:
        raise DataError(
            f"{path}: size {size} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 "
            "records (truncated, or not a CIFAR-10 binary batch?)"
        )
    n = size // _CIFAR_RECORD
    with path.open("rb") as f:
        for start in range(0, n, BLOCK):
            k = min(BLOCK, n - start)
            raw = np.frombuffer(f.read(k * _CIFAR_RECORD), np.uint8).reshape(k, _CIFAR_RECORD)
            labels = raw[:, 0].astype(np.int64)
            if (labels > 9).any():
                i = start + int(np.flatnonzero(labels > 9)[0])
                raise DataError(f"{path}: record {i} has label {labels[i - start]}; expected 0-9")
            yield Records(raw[:, 1:].reshape(k, 3, 32, 32), labels)


def _cifar_pickle(path: Path) -> Records:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: CIFAR pickle holds a {type(obj).__name__}, expected a dict")
    d: dict[str, Any] = {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    data = d.get("data")
    labels = d.get("labels", d.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: CIFAR pickle needs 'data' as a uint8 (N, 3072) array")
    if data.shape[1] != 3072 or labels is None or len(labels) != len(data):
        raise DataError(
            f"{path}: CIFAR pickle 'data' has shape {data.shape} and "
            f"{'no' if labels is None else len(labels)} labels; expected (N, 3072) and N labels"
        )
    return Records(data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64))


# --- FER2013 ------------------------------------------------------------------------------


def read_fer2013(
    path: str | Path, *, usage: Sequence[str] = (), class_names: Sequence[str] = ()
) -> Converted:
    """The FER2013 CSV (``emotion``, ``pixels``, ``Usage``); ``usage`` keeps only those rows.

    ``pixels`` holds space-separated grey levels of a square image (48x48 in FER2013); every
    row must hold as many as the first.
    """
    path = Path(path)
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    missing = {"emotion", "pixels"} - set(columns)
    if missing:
        f.close()
        raise DataError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; FER2013 has "
            f"emotion,pixels,Usage (found {','.join(columns) or 'nothing'})"
        )
    keep = set(usage)
    rows = ((reader.line_num, r) for r in reader if not keep or r.get("Usage") in keep)
    first = next(rows, None)
    if first is None:
        f.close()
        raise DataError(f"{path}: no rows" + (f" with Usage in {sorted(keep)}" if keep else ""))
    n_pixels = len(first[1]["pixels"].split())
    side = math.isqrt(n_pixels)
    if side * side != n_pixels or side == 0:
        f.close()
        raise DataError(f"{path}: line {first[0]}: {n_pixels} pixels is not a square image")

    def parse(line: int, row: dict) -> tuple[np.ndarray, int]:
        values = (row.get("pixels") or "").split()
        if None in row or len(values) != n_pixels:
            raise DataError(
                f"{path}: line {line}: ragged row: 'pixels' holds {len(values)} values"
                + (" and the row has extra columns" if None in row else "")
                + f"; expected {n_pixels} ({side}x{side}) as on line {first[0]}"
            )
        try:
            pixels = np.array(values, dtype=np.int64)
            label = int(row["emotion"])
        except (ValueError, TypeError):
            raise DataError(f"{path}: line {line}: non-integer emotion or pixel value") from None
        if pixels.min() < 0 or pixels.max() > 255:
            raise DataError(f"{path}: line {line}: pixel values must lie in 0..255")
        return pixels.astype(np.uint8), label

    def records() -> Iterator[Records]:
        with f:
            pending = [first]
            for item in rows:
                pending.append(item)
                if len(pending) == BLOCK:
                    yield _fer_block(pending, parse, side)
                    pending = []
            if pending:
                yield _fer_block(pending, parse, side)

    return Converted(
        records(), (1, side, side), "uint8",
        tuple(class_names) or CLASS_NAMES["fer2013"], f"fer2013:{path.name}", origin=str(path),
    )  # fmt: skip


def _fer_block(rows: list, parse, side: int) -> Records:
    parsed = [parse(line, row) for line, row in rows]
    images = np.stack([p for p, _ in parsed]).reshape(-1, 1, side, side)
    labels = np.array([y for _, y in parsed], dtype=np.int64)
    ids = np.array([line for line, _ in rows], dtype=np.int64)
    return Records(images, labels, ids)
