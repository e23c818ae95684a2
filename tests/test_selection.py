"""`explain --limit N` and `--ids`: a subset of the inputs, explained as in a full run (per-image
seeds), recorded in the job so that resume and reruns account for it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import tig_batch._h5write as h5write
from tig_batch._selection import Selection
from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, decode, write_shards
from tig_batch.errors import DataError
from tig_batch.report._examples import load_examples, select_examples

CHEAP = ["--methods", "zero,smoothgrad", "--n-steps", "4", "--smoothgrad-samples", "2", "-q"]


def test_ids_and_ranges() -> None:
    selection = Selection.parse("3, 10-12,cat/1.png")
    assert selection.ids == ("3", "10-12", "cat/1.png")
    assert selection.matches(np.arange(14)).nonzero()[0].tolist() == [3, 10, 11, 12]
    names = np.array(["cat/1.png", "cat/2.png", "10"])
    assert selection.matches(names).tolist() == [True, False, True]
    assert Selection.parse(None, 5) == Selection((), 5) and Selection().everything
    with pytest.raises(DataError, match="--ids is empty"):
        Selection.parse(" , ")
    with pytest.raises(DataError, match="range 9-3 is empty"):
        Selection.parse("9-3")


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as file:
        return {
            "ids": file["ids"][()], "zero": file["attributions/zero"][()],
            "smoothgrad": file["attributions/smoothgrad"][()],
            "job": json.loads(file.attrs["job"]),
        }  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = digits
    return write_shards(
        [Records(images[:16], labels[:16])], tmp_path_factory.mktemp("sel") / "in",
        ShardSpec((1, 8, 8), class_names=tuple(map(str, range(10))), split="test"), shard_size=8,
    ).path  # fmt: skip


@pytest.fixture(scope="module")
def full(digits_bundle: Path, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sel") / "full"
    code, message = _run("explain", digits_bundle, shards, "-o", out, *CHEAP)
    assert code == 0, message
    return out


@pytest.mark.slow
def test_a_subset_is_explained_as_in_the_full_run(
    digits_bundle: Path, shards: Path, full: Path, tmp_path: Path
) -> None:
    out = tmp_path / "some"
    code, message = _run("explain", digits_bundle, shards, "-o", out, "--ids", "2,9-11", *CHEAP)
    assert code == 0, message
    whole = {name: _read(full / name) for name in ("test-00000.h5", "test-00001.h5")}
    assert whole["test-00001.h5"]["ids"].tolist() == list(range(8, 16))  # dataset positions
    for name, rows in (("test-00000.h5", [2]), ("test-00001.h5", [1, 2, 3])):
        some = _read(out / name)
        assert some["ids"].tolist() == whole[name]["ids"][rows].tolist()
        for method in ("zero", "smoothgrad"):  # per-image seeds: the same noise
            expected = whole[name][method][rows]
            np.testing.assert_allclose(some[method], expected, rtol=1e-5, atol=1e-6)
        assert some["job"]["input"]["rows"]["count"] == len(rows)
    refs = select_examples([out / "test-00001.h5"], ["10"])  # the report finds its image
    (example,), _ = load_examples(refs)
    with h5py.File(shards / "test-00001.h5") as file:
        expected = decode(file["images"][2], (0.0, 1.0))
    np.testing.assert_array_equal(example.image, expected)


@pytest.mark.slow
def test_limit_then_reruns(digits_bundle: Path, shards: Path, full: Path, tmp_path: Path) -> None:
    out = tmp_path / "first"
    code, message = _run("explain", digits_bundle, shards, "-o", out, "--limit", "5", *CHEAP)
    assert code == 0, message
    assert sorted(p.name for p in out.iterdir()) == ["test-00000.h5"]
    first = _read(out / "test-00000.h5")
    assert first["ids"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(
        first["zero"], _read(full / "test-00000.h5")["zero"][:5], rtol=1e-5, atol=1e-6
    )
    before = (out / "test-00000.h5").read_bytes()
    assert _run("explain", digits_bundle, shards, "-o", out, "--limit", "5", *CHEAP)[0] == 0
    assert (out / "test-00000.h5").read_bytes() == before  # the same job: kept
    code, message = _run("explain", digits_bundle, shards, "-o", out, "--limit", "6", *CHEAP)
    assert code == 2 and "exists; rerun with --overwrite" in message
    code, message = _run("explain", digits_bundle, shards, "-o", out, "--ids", "99", *CHEAP)
    assert code == 2 and "--ids 99 selects no image of the inputs" in message


@pytest.mark.slow
def test_a_stopped_subset_resumes(
    digits_bundle: Path, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped at its third chunk (a full disk), then rerun: the chunks done are kept."""
    args = ["explain", digits_bundle, shards / "test-00001.h5", "--ids", "1,3-6", *CHEAP]
    real = h5write._pwrite

    def full_at_chunk_2(fd: int, data: bytes, offset: int) -> int:
        if "chunk-000002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(h5write, "_pwrite", full_at_chunk_2)
    code, message = _run(*args, "-o", tmp_path / "out", "--batch-size", "2")
    assert code == 2 and "chunk-000002.h5: write failed" in message, message
    parts = tmp_path / "out" / "test-00001.h5.parts"
    assert sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.h5", "chunk-000001.h5"]
    monkeypatch.undo()
    assert _run(*args, "-o", tmp_path / "out", "--batch-size", "2")[0] == 0
    assert _run(*args, "-o", tmp_path / "once", "--batch-size", "2")[0] == 0
    resumed, once = (
        _read(tmp_path / "out" / "test-00001.h5"),
        _read(tmp_path / "once" / "test-00001.h5"),
    )
    assert resumed["ids"].tolist() == [1, 3, 4, 5, 6]
    np.testing.assert_array_equal(resumed["zero"], once["zero"])
