"""The shard format: writer and reader round trips, and every malformed shard named clearly."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tig_batch.data import (
    FORMAT_NAME,
    Records,
    ShardSpec,
    iter_batches,
    iter_shuffled,
    open_dataset,
    summarize,
    write_shards,
)
from tig_batch.errors import DataError

SPEC = ShardSpec((1, 4, 4), class_names=("a", "b", "c"), split="train", source="test")


def _records(n: int, seed: int = 0) -> Records:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 4, 4), dtype=np.uint8)
    return Records(images, rng.integers(0, 3, size=n), np.arange(100, 100 + n))


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_round_trip_across_shards(tmp_path: Path, compression: str) -> None:
    rec = _records(23)
    info = write_shards(
        [Records(rec.images[:10], rec.labels[:10], rec.ids[:10]),
         Records(rec.images[10:], rec.labels[10:], rec.ids[10:])],
        tmp_path / "out", SPEC, shard_size=8, compression=compression,
    )  # fmt: skip
    assert [s.path.name for s in info.shards] == [
        "train-00000.h5", "train-00001.h5", "train-00002.h5",
    ]  # fmt: skip
    assert [s.count for s in info.shards] == [8, 8, 7]
    assert (info.count, info.shape, info.class_names) == (23, (1, 4, 4), ("a", "b", "c"))
    batches = list(iter_batches(tmp_path / "out", 5))
    # A batch never spans shards: 8 = 5 + 3, 8 = 5 + 3, 7 = 5 + 2.
    assert [(b.shard.name[-8:-3], b.start, len(b)) for b in batches] == [
        ("00000", 0, 5), ("00000", 5, 3), ("00001", 0, 5), ("00001", 5, 3),
        ("00002", 0, 5), ("00002", 5, 2),
    ]  # fmt: skip
    images = np.concatenate([b.images for b in batches])
    assert images.dtype == np.float32 and images.shape == (23, 1, 4, 4)
    np.testing.assert_array_equal(images, rec.images.astype(np.float32) / 255)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), rec.labels)
    np.testing.assert_array_equal(np.concatenate([b.ids for b in batches]), rec.ids)
    with h5py.File(info.shards[0].path) as f:
        assert f.attrs["format"] == FORMAT_NAME and f.attrs["format_version"] == 1
        assert f["images"].compression == (None if compression == "none" else compression)
        assert f["images"].dtype == np.uint8 and f["labels"].dtype == np.int64


def test_uint8_decodes_onto_the_value_range(tmp_path: Path) -> None:
    images = np.array([0, 51, 255, 102], dtype=np.uint8).reshape(1, 1, 2, 2)
    write_shards([Records(images)], tmp_path / "x.h5", ShardSpec((1, 2, 2), value_range=(-1, 1)))
    (batch,) = iter_batches(tmp_path / "x.h5", 4)
    np.testing.assert_allclose(batch.images.ravel(), [-1.0, -0.6, 1.0, -0.2], atol=1e-6)
    assert batch.labels is None
    np.testing.assert_array_equal(batch.ids, [0])  # positions when no ids are stored


def test_float32_round_trip_and_string_ids(tmp_path: Path) -> None:
    x = np.linspace(-2, 3, 2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    spec = ShardSpec((3, 4, 4), dtype="float32", value_range=(-2.0, 3.0), channel_layout="RGB")
    info = write_shards(
        [Records(x, None, np.array(["cat/1.png", "dog/2.png"]))], tmp_path / "f.h5", spec
    )
    (batch,) = iter_batches(info, 10)
    np.testing.assert_array_equal(batch.images, x.astype(np.float32))
    assert list(batch.ids) == ["cat/1.png", "dog/2.png"]
    assert (info.dtype, info.channel_layout, info.has_labels) == ("float32", "RGB", False)


def test_summary_counts_and_statistics(tmp_path: Path) -> None:
    rec = _records(30, seed=3)
    write_shards([rec], tmp_path / "d", SPEC, shard_size=7)
    s = summarize(tmp_path / "d")
    x = rec.images.astype(np.float64) / 255
    assert s.count == 30
    assert s.class_counts == tuple(np.bincount(rec.labels, minlength=3))
    assert s.mean[0] == pytest.approx(x.mean()) and s.std[0] == pytest.approx(x.std())
    # The hash is of the data, not of the files: other shard sizes give the same hash.
    write_shards([rec], tmp_path / "e.h5", SPEC, compression="lzf")
    assert summarize(tmp_path / "e.h5").sha256 == s.sha256


def test_shuffled_stream_is_a_seeded_permutation(tmp_path: Path) -> None:
    rec = _records(50)
    write_shards([rec], tmp_path / "d", SPEC, shard_size=16)
    runs = [list(iter_shuffled(tmp_path / "d", 8, seed=s, buffer_size=20)) for s in (1, 1, 2)]
    order = [np.concatenate([x.reshape(len(x), -1)[:, :4] for x, _ in run]) for run in runs]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2])
    got = sorted(map(bytes, np.concatenate([x for x, _ in runs[0]]).reshape(50, -1)))
    want = sorted(map(bytes, (rec.images.astype(np.float32) / 255).reshape(50, -1)))
    assert got == want  # every image exactly once
    assert all(len(x) == len(y) for x, y in runs[0])


# --- malformed shards --------------------------------------------------------------------


def _raw_shard(path: Path, images, labels=None, **attrs) -> Path:
    with h5py.File(path, "w") as f:
        if images is not None:
            f["images"] = images
        if labels is not None:
            f["labels"] = labels
        f.attrs.update({"format": FORMAT_NAME, "format_version": 1, "value_range": [0.0, 1.0],
                        "channel_layout": "L", "class_names": '["a", "b"]', **attrs})  # fmt: skip
    return path


GOOD = np.zeros((2, 1, 4, 4), np.float32)


@pytest.mark.parametrize(
    ("images", "labels", "attrs", "message"),
    [
        (None, None, {}, "missing dataset 'images'"),
        (np.zeros((2, 4, 4), np.uint8), None, {}, "rank 3"),
        (np.zeros((2, 1, 4, 4), np.int16), None, {}, "dtype int16"),
        (np.zeros((0, 1, 4, 4), np.uint8), None, {}, "empty shard"),
        (GOOD, np.array([0, 2]), {}, "holds 2 at index 1, outside [0, 1]"),
        (GOOD, np.array([0, -1]), {}, "holds -1 at index 1"),
        (GOOD, np.array([0, 1, 1]), {}, "'labels' has shape (3,)"),
        (GOOD, None, {"format_version": 2}, "format version 2 is not supported"),
        (GOOD, None, {"format": "other"}, "not a tig-batch shard"),
        (GOOD, None, {"value_range": [1.0, 0.0]}, "not a finite, increasing pair"),
    ],
)
def test_malformed_shard_names_file_and_dataset(tmp_path, images, labels, attrs, message) -> None:
    path = _raw_shard(tmp_path / "bad.h5", images, labels, **attrs)
    with pytest.raises(DataError) as err:
        open_dataset(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1.5])
def test_bad_float_pixels_are_caught_while_reading(tmp_path: Path, value: float) -> None:
    images = np.zeros((6, 1, 4, 4), np.float32)
    images[4, 0, 1, 2] = value
    path = _raw_shard(tmp_path / "px.h5", images)
    batches = iter_batches(path, 2)
    next(batches), next(batches)
    with pytest.raises(DataError, match=r"px\.h5: dataset 'images' .*image 4"):
        next(batches)


def test_not_hdf5_and_truncated_hdf5(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not HDF5" * 100)
    with pytest.raises(DataError, match=r"junk\.h5: not a readable HDF5 file"):
        open_dataset(junk)
    rec = _records(4000)
    good = write_shards([rec], tmp_path / "good.h5", SPEC).path
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.h5: .*(corrupt|truncated)"):
        open_dataset(cut)
        list(iter_batches(cut, 512))


def test_shards_must_agree(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    _raw_shard(d / "a.h5", GOOD)
    _raw_shard(d / "b.h5", np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"b\.h5: shard disagrees with a\.h5"):
        open_dataset(d)
    with pytest.raises(DataError, match=r"holds no .h5 shard files"):
        open_dataset(tmp_path / "d" / ".." / "d" / "..")


# --- the writer refuses bad input and never damages what is there --------------------------


def test_writer_rejects_bad_records(tmp_path: Path) -> None:
    bad_label = Records(np.zeros((3, 1, 4, 4), np.uint8), np.array([0, 3, 1]))
    with pytest.raises(DataError, match=r"label 3 of image 1 is outside \[0, 2\]"):
        write_shards([bad_label], tmp_path / "a", SPEC)
    nan = np.zeros((2, 1, 4, 4), np.float32)
    nan[1, 0, 0, 0] = np.nan
    fspec = ShardSpec((1, 4, 4), dtype="float32")
    with pytest.raises(DataError, match="image 1 has NaN or Inf pixels"):
        write_shards([Records(nan)], tmp_path / "b", fspec, origin="nan.npz")
    with pytest.raises(DataError, match=r"shape \(2, 1, 5, 4\)"):
        write_shards([Records(np.zeros((2, 1, 5, 4), np.uint8))], tmp_path / "c", SPEC)
    with pytest.raises(DataError, match="no images to write"):
        write_shards([], tmp_path / "d", SPEC)
    assert not list(tmp_path.rglob("*.h5*"))  # nothing left behind, not even .partial files


def test_failed_overwrite_leaves_existing_shards_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_shards([_records(20)], out, SPEC, shard_size=8)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match="already holds shards"):
        write_shards([_records(5)], out, SPEC)

    def blocks():
        yield _records(10, seed=1)
        yield Records(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 9]))

    with pytest.raises(DataError, match="label 9"):
        write_shards(blocks(), out, SPEC, shard_size=4, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    info = write_shards([_records(5, seed=2)], out, SPEC, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["train-00000.h5"] and info.count == 5


def test_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=rf"{blocker}/shards: cannot write to the output directory"):
        write_shards([_records(2)], blocker / "shards", SPEC)
