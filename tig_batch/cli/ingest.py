"""``tig-batch ingest <format>``: convert datasets into HDF5 shards."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tig_batch.cli._common import CONTEXT_SETTINGS, TigGroup, progress_bar, quiet_option
from tig_batch.data import CLASS_NAMES, COMPRESSIONS, Converted, DatasetInfo
from tig_batch.data import ingest as _ingest

_IN_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _parse_range(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected LO,HI such as 0,1") from None
    if not lo < hi:
        raise click.BadParameter(f"LO must be below HI, got {value}")
    return lo, hi


def _parse_names(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    if value in CLASS_NAMES:
        return CLASS_NAMES[value]
    return tuple(v.strip() for v in value.split(",") if v.strip())


def output_options(f: Callable) -> Callable:
    """Options every converter shares: where and how the shards are written."""
    for option in reversed([
        click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
                     help="Directory of shards, or a single file ending in .h5."),
        click.option("--split", help="Split name stored in the shards (train, test) [default: "
                     "the one --output or the input's name says, e.g. mnist/train, "
                     "t10k-images-idx3-ubyte.gz; else none]."),
        click.option("--shard-size", default=10_000, show_default=True, type=click.IntRange(1),
                     help="Images per shard file."),
        click.option("--compression", type=click.Choice(COMPRESSIONS), default="gzip",
                     show_default=True, help="Chunk compression (gzip and lzf use shuffle)."),
        click.option("--class-names", callback=_parse_names, metavar="NAMES",
                     help="Comma-separated class names, or a preset: "
                     + ", ".join(CLASS_NAMES) + "."),
        click.option("--value-range", callback=_parse_range, metavar="LO,HI",
                     help="Value range of the decoded pixels; uint8 maps 0..255 onto it "
                     "(default 0,1)."),
        click.option("--overwrite", is_flag=True, help="Replace shards already in --output."),
        quiet_option,
    ]):  # fmt: skip
        f = option(f)
    return f


# words in a path that name a split, and the split they name
_SPLITS = {
    "train": "train", "training": "train", "test": "test", "testing": "test", "t10k": "test",
    "val": "val", "valid": "val", "validation": "val",
}  # fmt: skip


def infer_split(output: Path, inputs: tuple[Path, ...]) -> str:
    """The split ``output``'s name says (``mnist/train``, ``test.h5``), else the first input's
    name or folder (``t10k-images-idx3-ubyte.gz``, ``photos/train``); else none."""
    names = [output.stem if output.suffix == ".h5" else output.name]
    for path in inputs:
        names += [re.split(r"[-_.]", path.name.lower())[0], path.parent.name]
    for name in names:
        if name.lower() in _SPLITS:
            return _SPLITS[name.lower()]
    return ""


def _write(converted: Converted, opts: dict[str, Any], *inputs: Path) -> DatasetInfo:
    quiet = opts["quiet"]
    split = opts["split"] if opts["split"] is not None else infer_split(opts["output"], inputs)
    with progress_bar(None, f"ingest {converted.source}", quiet) as bar:
        info = _ingest(
            converted, opts["output"], split=split, value_range=opts["value_range"],
            class_names=opts["class_names"], shard_size=opts["shard_size"],
            compression=opts["compression"], overwrite=opts["overwrite"], on_progress=bar.update,
        )  # fmt: skip
    c, h, w = info.shape
    click.echo(
        f"{info.path}: {info.count} images {c}x{h}x{w} {info.dtype} in {len(info.shards)} "
        f"shard(s), {len(info.class_names)} classes, value range {list(info.value_range)}"
    )
    return info


@click.group(cls=TigGroup, context_settings=CONTEXT_SETTINGS)
def ingest() -> None:
    """Convert a dataset into tig-batch HDF5 shards (format v1, see docs/format.md).

    \b
    Example:
        tig-batch ingest idx train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz -o mnist/train
    """


@ingest.command("idx")
@click.argument("images", type=_IN_FILE)
@click.argument("labels", type=_IN_FILE, required=False)
@output_options
def ingest_idx(images: Path, labels: Path | None, **opts: Any) -> None:
    """MNIST or Fashion-MNIST IDX files (raw or .gz): IMAGES and optional LABELS.

    \b
    Example:
        tig-batch ingest idx t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz \\
            --class-names fashion-mnist --split test -o fashion/test
    """
    from tig_batch.data import read_idx

    _write(read_idx(images, labels), opts, images)


@ingest.command("cifar10")
@click.argument("batches", nargs=-1, required=True, type=_IN_FILE)
@output_options
def ingest_cifar10(batches: tuple[Path, ...], **opts: Any) -> None:
    """CIFAR-10 batch files, binary (.bin) or Python pickle (read with a restricted loader).

    \b
    Example:
        tig-batch ingest cifar10 cifar-10-batches-bin/data_batch_*.bin --split train -o cifar/train
    """
    from tig_batch.data import read_cifar10

    _write(read_cifar10(batches), opts, *batches)


@ingest.command("fer2013")
@click.argument("csv_file", metavar="CSV", type=_IN_FILE)
@click.option(
    "--usage", multiple=True, help="Keep rows with this Usage (repeatable), e.g. Training."
)
@output_options
def ingest_fer2013(csv_file: Path, usage: tuple[str, ...], **opts: Any) -> None:
    """The FER2013 CSV with columns emotion, pixels and Usage.

    \b
    Example:
        tig-batch ingest fer2013 fer2013.csv --usage PublicTest --split test -o fer/test
    """
    from tig_batch.data import read_fer2013

    _write(read_fer2013(csv_file, usage=usage), opts, csv_file)


@ingest.command("image-folder")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--mode", type=click.Choice(["L", "RGB"]), help="Colour mode (default: as found).")
@output_options
def ingest_image_folder(root: Path, mode: str | None, **opts: Any) -> None:
    """A folder with one subfolder of PNG/JPEG images per class (names sorted = classes).

    \b
    Example:
        tig-batch ingest image-folder photos/ --mode RGB --split train -o photos-shards
    """
    from tig_batch.data import read_image_folder

    _write(read_image_folder(root, mode=mode), opts, root)


@ingest.command("arrays")
@click.argument("array_file", metavar="FILE", type=_IN_FILE)
@click.option("--labels", "labels_file", type=_IN_FILE, help="A .npy of labels (for a .npy FILE).")
@click.option("--images-key", default="images", show_default=True, help="Array name in a .npz.")
@click.option("--labels-key", default="labels", show_default=True, help="Array name in a .npz.")
@click.option(
    "--layout", type=click.Choice(["nchw", "nhwc"]), help="Channel axis of rank-4 images."
)
@output_options
def ingest_arrays(
    array_file: Path, labels_file: Path | None, images_key: str, labels_key: str,
    layout: str | None, **opts: Any,
) -> None:  # fmt: skip
    """A .npz (images, labels) or .npy of images: uint8 or float, (N,H,W), NCHW or NHWC.

    \b
    Example:
        tig-batch ingest arrays digits.npz --value-range 0,1 --split train -o digits/train
    """
    from tig_batch.data import read_arrays

    converted = read_arrays(
        array_file, labels=labels_file, images_key=images_key, labels_key=labels_key,
        layout=layout, value_range=opts["value_range"],
    )  # fmt: skip
    _write(converted, opts, array_file)
