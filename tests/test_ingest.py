"""Converters: small files in each real format, byte for byte, and their failure messages."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tig_batch.data import (
    ingest,
    iter_batches,
    read_arrays,
    read_cifar10,
    read_fer2013,
    read_idx,
    read_image_folder,
    safe_load_pickle,
)
from tig_batch.errors import DataError


def _all(path: Path):
    batches = list(iter_batches(path, 1000))
    labels = None if batches[0].labels is None else np.concatenate([b.labels for b in batches])
    return (
        np.concatenate([b.images for b in batches]),
        labels,
        np.concatenate([b.ids for b in batches]),
    )


# --- IDX ----------------------------------------------------------------------------------


def _idx_bytes(images: np.ndarray) -> bytes:
    # The IDX layout by hand: 00 00, type 08 (uint8), rank, then big-endian uint32 sizes.
    header = (
        b"\x00\x00\x08" + bytes([images.ndim]) + struct.pack(">" + "I" * images.ndim, *images.shape)
    )
    return header + images.tobytes()


@pytest.fixture
def idx_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    img, lab = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte"
    img.write_bytes(gzip.compress(_idx_bytes(images)))
    lab.write_bytes(_idx_bytes(labels))
    return img, lab, images, labels


def test_idx_header_is_what_mnist_uses(idx_files) -> None:
    img, lab, _, _ = idx_files
    assert gzip.decompress(img.read_bytes())[:16] == bytes.fromhex(
        "00000803000000050000000300000004"
    )
    assert lab.read_bytes()[:8] == bytes.fromhex("0000080100000005")


def test_idx_round_trip(tmp_path: Path, idx_files) -> None:
    img, lab, images, labels = idx_files
    info = ingest(read_idx(img, lab), tmp_path / "out", split="train", shard_size=2)
    assert (info.count, info.shape, len(info.shards)) == (5, (1, 3, 4), 3)
    assert info.class_names == tuple("0123456789") and info.source == f"idx:{img.name}"
    x, y, _ = _all(info.path)
    np.testing.assert_array_equal(x[:, 0], images / np.float32(255))
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-3], "truncated: expected 60 more bytes of items 0..4, found 57"),
        (lambda b: b[:10], "truncated: expected 12 more bytes of the IDX dimensions"),
        (lambda b: b"\x08\x03\x00\x00" + b[4:], "wrong magic number 0x08030000"),
        (lambda b: b"\x00\x00\x07\x03" + b[4:], "wrong magic number 0x00000703"),
        (lambda b: b + b"\x00", "trailing bytes after 5 items"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_malformed(tmp_path: Path, mutate, message: str, compress: bool) -> None:
    images = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    data = mutate(_idx_bytes(images))
    path = tmp_path / ("bad.gz" if compress else "bad")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError) as err:
        ingest(read_idx(path), tmp_path / "out")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    packed = gzip.compress(_idx_bytes(np.arange(4000, dtype=np.uint8).reshape(10, 20, 20)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) - 20])
    with pytest.raises(DataError, match=rf"{path}: truncated"):
        ingest(read_idx(path), tmp_path / "out")


def test_idx_label_count_mismatch(tmp_path: Path, idx_files) -> None:
    img, _, _, _ = idx_files
    lab = tmp_path / "short-labels"
    lab.write_bytes(_idx_bytes(np.array([1, 2], dtype=np.uint8)))
    with pytest.raises(DataError, match=r"short-labels: holds 2 labels but .* holds 5 images"):
        read_idx(img, lab)


# --- CIFAR-10 -----------------------------------------------------------------------------


def _cifar_images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def test_cifar_binary_records(tmp_path: Path) -> None:
    images, labels = _cifar_images(3), [7, 0, 9]
    # One record: the label byte, then 1024 red, 1024 green, 1024 blue bytes, row-major.
    data = b"".join(
        bytes([y]) + im[0].tobytes() + im[1].tobytes() + im[2].tobytes()
        for y, im in zip(labels, images, strict=True)
    )
    assert len(data) == 3 * 3073
    (tmp_path / "data_batch_1.bin").write_bytes(data)
    info = ingest(read_cifar10([tmp_path / "data_batch_1.bin"]), tmp_path / "out.h5")
    assert info.channel_layout == "RGB" and info.class_names[7] == "horse"
    x, y, _ = _all(info.path)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, labels)
    (tmp_path / "cut.bin").write_bytes(data[:-1])
    with pytest.raises(DataError, match=r"cut\.bin: size 9218 bytes is not a whole number"):
        ingest(read_cifar10([tmp_path / "cut.bin"]), tmp_path / "o2")
    (tmp_path / "label.bin").write_bytes(b"\x0c" + data[1:3073])
    with pytest.raises(DataError, match=r"label\.bin: record 0 has label 12"):
        ingest(read_cifar10([tmp_path / "label.bin"]), tmp_path / "o3")


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_round_trip(tmp_path: Path, protocol: int) -> None:
    images = _cifar_images(4)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [1, 2, 3, 4],
        b"data": images.reshape(4, 3072),
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y, _ = _all(ingest(read_cifar10([path]), tmp_path / "out").path)
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, [1, 2, 3, 4])


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("make", ["system", "eval", "class", "object-array"])
def test_pickle_with_a_callable_is_refused(tmp_path: Path, make: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "system": lambda: {b"data": _Exploit(marker)},
        "eval": lambda: [_EvalExploit()],
        "class": lambda: {b"data": Path("x")},
        "object-array": lambda: {b"data": np.array([1, "a"], dtype=object)},
    }[make]()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as err:
        read_cifar10([path]).records.__next__()
    assert str(err.value).startswith(f"{path}: unsafe or invalid pickle: refused")
    assert not marker.exists()
    with pytest.raises(DataError, match="refused"):
        safe_load_pickle(path)


# --- FER2013 ------------------------------------------------------------------------------


def test_fer2013_rows_and_usage(tmp_path: Path) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_text(
        "emotion,pixels,Usage\n"
        "0,0 1 2 3,Training\n"
        "6,255 254 253 252,PublicTest\n"
        "3,10 20 30 40,Training\n"
    )
    info = ingest(read_fer2013(path, usage=["Training"]), tmp_path / "out", split="train")
    x, y, ids = _all(info.path)
    assert info.shape == (1, 2, 2) and info.class_names[3] == "Happy"
    np.testing.assert_array_equal(np.round(x * 255).reshape(2, 4), [[0, 1, 2, 3], [10, 20, 30, 40]])
    np.testing.assert_array_equal(y, [0, 3])
    np.testing.assert_array_equal(ids, [2, 4])  # CSV line numbers
    _, y_all, _ = _all(ingest(read_fer2013(path), tmp_path / "all").path)
    np.testing.assert_array_equal(y_all, [0, 6, 3])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0,1 2 3 4,Training\n1,1 2 3,Training\n", "line 3: ragged row: 'pixels' holds 3 values"),
        ("0,1 2 3 4,Training\n1,1 2 3 4,Training,extra\n", "extra columns"),
        ("0,1 2 3,Training\n", "3 pixels is not a square image"),
        ("0,1 2 3 999,Training\n", "line 2: pixel values must lie in 0..255"),
        ("x,1 2 3 4,Training\n", "line 2: non-integer emotion or pixel value"),
    ],
)
def test_fer2013_malformed(tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "fer.csv"
    path.write_text("emotion,pixels,Usage\n" + rows)
    with pytest.raises(DataError) as err:
        ingest(read_fer2013(path), tmp_path / "out")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_fer2013_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "fer.csv"
    path.write_text("label,pixels\n0,1 2 3 4\n")
    with pytest.raises(DataError, match=r"fer\.csv: missing column\(s\) emotion"):
        read_fer2013(path)


# --- image folders and arrays -------------------------------------------------------------


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = {}
    for cls in ("dog", "cat"):
        (tmp_path / "root" / cls).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "root" / cls / f"{i}.png")
            pixels[f"{cls}/{i}.png"] = arr
    (tmp_path / "root" / "cat" / "notes.txt").write_text("ignored")
    info = ingest(read_image_folder(tmp_path / "root"), tmp_path / "out")
    assert info.class_names == ("cat", "dog") and info.shape == (3, 4, 6)
    x, y, ids = _all(info.path)
    assert list(ids) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    for image, name in zip(x, ids, strict=True):
        np.testing.assert_array_equal(
            np.round(image * 255).astype(np.uint8), pixels[name].transpose(2, 0, 1)
        )
    grey = ingest(read_image_folder(tmp_path / "root", mode="L"), tmp_path / "grey")
    assert grey.shape == (1, 4, 6) and grey.channel_layout == "L"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "root" / "dog" / "2.png")
    with pytest.raises(DataError, match=r"dog/2\.png: image is 5x5, but 0\.png is 6x4"):
        ingest(read_image_folder(tmp_path / "root"), tmp_path / "bad")
    (tmp_path / "root" / "dog" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"dog/2\.png: cannot read image"):
        ingest(read_image_folder(tmp_path / "root"), tmp_path / "bad2")


def test_npz_nhwc_float_and_npy(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((5, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=x, labels=np.array([0, 1, 2, 1, 0]))
    info = ingest(read_arrays(tmp_path / "a.npz"), tmp_path / "out")
    got, y, _ = _all(info.path)
    assert info.dtype == "float32" and info.class_names == ("0", "1", "2")
    np.testing.assert_array_equal(got, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(y, [0, 1, 2, 1, 0])
    np.save(tmp_path / "g.npy", np.full((3, 4, 4), 255, np.uint8))
    got, y, _ = _all(ingest(read_arrays(tmp_path / "g.npy"), tmp_path / "g").path)
    assert y is None and got.shape == (3, 1, 4, 4) and (got == 1.0).all()


def test_arrays_refuse_pickles_and_bad_values(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: cannot load as \.npy/\.npz"):
        read_arrays(tmp_path / "obj.npy")
    np.save(tmp_path / "big.npy", np.full((2, 4, 4), 2.0))
    with pytest.raises(DataError, match=r"big\.npy: image 0 has pixels outside the value range"):
        ingest(read_arrays(tmp_path / "big.npy"), tmp_path / "o")
    ok = ingest(read_arrays(tmp_path / "big.npy", value_range=(0, 2)), tmp_path / "o2")
    assert ok.value_range == (0.0, 2.0)
    nan = np.zeros((2, 4, 4))
    nan[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(DataError, match=r"nan\.npy: image 1 has NaN or Inf pixels"):
        ingest(read_arrays(tmp_path / "nan.npy"), tmp_path / "o3")
    np.savez(tmp_path / "lab.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 5]))
    with pytest.raises(DataError, match=r"lab\.npz: label 5 of image 1 is outside \[0, 1\]"):
        ingest(read_arrays(tmp_path / "lab.npz"), tmp_path / "o4", class_names=["a", "b"])
