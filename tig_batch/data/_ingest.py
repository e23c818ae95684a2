"""Image folders and numpy arrays as inputs; :func:`ingest` writes any input as shards."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from tig_batch.data._format import DatasetInfo
from tig_batch.data._readers import BLOCK, Converted
from tig_batch.data._writer import Records, ShardSpec, channel_layout_for, write_shards
from tig_batch.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image_folder(root: str | Path, *, mode: str | None = None) -> Converted:
    """One subfolder per class (sorted names are the classes), PNG or JPEG files inside.

    ``mode`` is ``"L"`` or ``"RGB"``; by default grey if the first image is grey. All images
    must share one size.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (label, path)
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{root}: no PNG or JPEG files in class subfolders (root/<class>/*.png)")

    def load(path: Path) -> Image.Image:
        try:
            with Image.open(path) as im:
                im.load()
                return im
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: cannot read image: {exc}") from None

    first = load(files[0][1])
    if mode is None:
        mode = "L" if first.mode in ("1", "L", "LA", "I", "I;16") else "RGB"
    if mode not in ("L", "RGB"):
        raise DataError(f"image mode must be L or RGB, not {mode!r}")
    width, height = first.size
    channels = 1 if mode == "L" else 3

    def records() -> Iterator[Records]:
        for start in range(0, len(files), BLOCK):
            block = files[start : start + BLOCK]
            images = np.empty((len(block), channels, height, width), np.uint8)
            for i, (_, path) in enumerate(block):
                im = load(path)
                if im.size != (width, height):
                    raise DataError(
                        f"{path}: image is {im.size[0]}x{im.size[1]}, but {files[0][1].name} is "
                        f"{width}x{height}; all images must share one size"
                    )
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
                images[i] = arr[None] if mode == "L" else arr.transpose(2, 0, 1)
            labels = np.array([label for label, _ in block], dtype=np.int64)
            ids = np.array([str(p.relative_to(root)) for _, p in block])
            yield Records(images, labels, ids)

    return Converted(
        records(),
        (channels, height, width),
        "uint8",
        tuple(classes),
        f"folder:{root.name}",
        origin=str(root),
    )


def _to_nchw(x: np.ndarray, path: Path, layout: str | None) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: images have shape {x.shape}; expected (N,H,W) or rank 4")
    if layout is None:
        if x.shape[1] in (1, 3):
            layout = "nchw"
        elif x.shape[3] in (1, 3):
            layout = "nhwc"
        else:
            raise DataError(
                f"{path}: cannot tell channels in shape {x.shape}; pass --layout nchw or nhwc"
            )
    return x if layout == "nchw" else x.transpose(0, 3, 1, 2)


def read_arrays(
    path: str | Path,
    *,
    labels: str | Path | None = None,
    images_key: str = "images",
    labels_key: str = "labels",
    layout: str | None = None,
    class_names: Sequence[str] = (),
    value_range: tuple[float, float] | None = None,
) -> Converted:
    """A ``.npz`` (arrays ``images`` and optional ``labels``) or a ``.npy`` of images.

    Images are (N, H, W), (N, C, H, W) or (N, H, W, C); uint8 pixels map to the value range
    (default [0, 1]), float pixels are kept and must lie inside it. Never unpickles.
    """
    path = Path(path)
    y = None
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.keys())
                key = images_key if images_key in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(
                        f"{path}: no array named {images_key!r} (found {', '.join(keys)}); "
                        "pass --images-key"
                    )
                x = loaded[key]
                if labels_key in keys:
                    y = loaded[labels_key]
        else:
            x = loaded
        if labels is not None:
            y = np.load(labels, allow_pickle=False)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot load as .npy/.npz (truncated or corrupt?): {exc}"
        ) from None
    x = _to_nchw(np.asarray(x), path, layout)
    if x.dtype == np.uint8:
        dtype = "uint8"
    elif x.dtype.kind == "f":
        dtype = "float32"
    else:
        raise DataError(f"{path}: images have dtype {x.dtype}; expected uint8 or float")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataError(
                f"{path}: labels have shape {y.shape} and dtype {y.dtype}; expected "
                f"({len(x)},) integers"
            )
    names = tuple(class_names)
    if not names and y is not None and len(y):
        names = tuple(str(i) for i in range(int(y.max()) + 1))

    def records() -> Iterator[Records]:
        for start in range(0, len(x), BLOCK):
            yb = None if y is None else y[start : start + BLOCK].astype(np.int64)
            yield Records(np.ascontiguousarray(x[start : start + BLOCK]), yb)

    return Converted(
        records(), tuple(int(s) for s in x.shape[1:]), dtype, names, f"arrays:{path.name}",
        value_range or (0.0, 1.0), origin=str(path),
    )  # fmt: skip


def ingest(
    converted: Converted,
    output: str | Path,
    *,
    split: str = "",
    value_range: tuple[float, float] | None = None,
    class_names: Sequence[str] | None = None,
    shard_size: int = 10_000,
    compression: str = "gzip",
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> DatasetInfo:
    """Write a converted input as shards; ``value_range``/``class_names`` override its own."""
    spec = ShardSpec(
        shape=converted.shape,
        dtype=converted.dtype,
        value_range=tuple(value_range or converted.value_range),
        channel_layout=channel_layout_for(converted.shape[0]),
        class_names=tuple(class_names) if class_names else converted.class_names,
        split=split,
        source=converted.source,
    )
    return write_shards(
        converted.records, output, spec, shard_size=shard_size, compression=compression,
        overwrite=overwrite, origin=converted.origin or converted.source, on_progress=on_progress,
    )  # fmt: skip
