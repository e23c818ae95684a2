"""Bad input, full disks and kills: a one-line error naming the file, exit code 2, earlier
outputs intact, nothing partial under a final name, and no debris after a clean rerun.

A full disk is injected where bytes reach the disk (``tig_batch._h5write._pwrite``), for the
files whose names match, as ``ENOSPC``; the subprocess tests check that the process still exits
with code 2 (HDF5 crashed with a segmentation fault when it saw such a failure).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import tig_batch._h5write as h5write
from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, write_shards

pytestmark = pytest.mark.slow  # the explain tests share the digits bundle (a minute to build)

CHEAP = ["--methods", "zero,gradient", "--n-steps", "4", "--batch-size", "4", "-q"]
DIGITS = tuple(str(i) for i in range(10))


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, matches: Callable[[str], bool]) -> None:
    """Writes to files whose path ``matches`` fail as on a full disk."""
    real = h5write._pwrite

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if matches(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(h5write, "_pwrite", pwrite)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_error_line(code: int, out: str, *expected: str) -> None:
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    for text in expected:
        assert text in lines[0], out


@pytest.fixture
def shards(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = digits
    return write_shards(
        [Records(images[:16], labels[:16])], tmp_path / "in",
        ShardSpec((1, 8, 8), class_names=DIGITS, split="test"), shard_size=8,
    ).path  # fmt: skip


# ----------------------------------------------------------------------------- full disks


@pytest.mark.parametrize("at", ["chunk", "merge"])
def test_explain_on_a_full_disk(
    at: str, digits_bundle: Path, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert _run("explain", digits_bundle, shards / "test-00000.h5", "-o", out, *CHEAP)[0] == 0
    before = _tree(out)
    if at == "chunk":
        _disk_full_for(monkeypatch, lambda name: ".parts/chunk-000001" in name)
    else:
        _disk_full_for(monkeypatch, lambda name: name.endswith("test-00001.h5.partial"))
    code, message = _run("explain", digits_bundle, shards, "-o", out, *CHEAP)
    where = "test-00001.h5.parts/chunk-000001.h5" if at == "chunk" else "test-00001.h5"
    _one_error_line(code, message, f"{out / where}: write failed (No space left on device)")
    assert not list(out.rglob("*.partial"))
    assert {k: v for k, v in _tree(out).items() if k in before} == before  # earlier outputs
    monkeypatch.undo()  # space freed: the same command completes and leaves no debris
    assert _run("explain", digits_bundle, shards, "-o", out, *CHEAP)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["test-00000.h5", "test-00001.h5"]


def test_ingest_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    array = tmp_path / "digits.npy"
    np.save(array, np.arange(30 * 16, dtype=np.uint8).reshape(30, 4, 4))
    out = tmp_path / "shards"
    assert _run("ingest", "arrays", array, "-o", out, "--shard-size", "10", "-q")[0] == 0
    before = _tree(out)
    _disk_full_for(monkeypatch, lambda name: name.endswith("data-00001.h5.partial"))
    code, message = _run(
        "ingest", "arrays", array, "-o", out, "--shard-size", "10", "--overwrite", "-q"
    )
    _one_error_line(code, message, f"{out / 'data-00001.h5'}: write failed (No space left on")
    assert _tree(out) == before  # the earlier shards, untouched; no .partial


def _in_subprocess(injection: str, *args: str | Path) -> subprocess.CompletedProcess:
    """The CLI in its own interpreter with every write failing: the exit code includes the
    interpreter's shutdown, where HDF5 used to crash."""
    code = (
        "import errno, os, tig_batch._h5write as w\n"
        "def full(fd, data, offset):\n"
        f"    if {injection}: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return os.pwrite(fd, data, offset)\n"
        "w._pwrite = full\n"
        "from tig_batch.cli import main\n"
        "main()\n"
    )
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_full_disk_exits_with_code_2_not_a_crash(
    digits_bundle: Path, shards: Path, tmp_path: Path
) -> None:
    array = tmp_path / "digits.npy"
    np.save(array, np.zeros((30, 4, 4), np.uint8))
    done = _in_subprocess("True", "ingest", "arrays", array, "-o", tmp_path / "s", "-q")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "write failed (No space left on device)" in done.stderr
    for failing in ("'.parts/' in os.readlink(f'/proc/self/fd/{fd}')", "True"):
        args = ["explain", digits_bundle, shards, "-o", tmp_path / "e", *CHEAP]
        done = _in_subprocess(failing, *args)
        assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
        assert not list((tmp_path / "e").rglob("*.partial"))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("target", ["10", "-1"])
def test_a_target_the_classifier_lacks_is_refused_up_front(
    target: str, digits_bundle: Path, shards: Path, tmp_path: Path
) -> None:
    code, out = _run("explain", digits_bundle, shards, "-o", tmp_path / "o", "--target", target)
    _one_error_line(code, out, f"target class {target} does not exist: the classifier has 10")
    assert not (tmp_path / "o").exists()


def test_labels_beyond_the_classifiers_classes(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, labels = digits
    twelve = write_shards(
        [Records(images[:4], labels[:4] + 2)], tmp_path / "twelve.h5",
        ShardSpec((1, 8, 8), class_names=tuple(map(str, range(12)))),
    ).path  # fmt: skip
    code, out = _run("explain", digits_bundle, twelve, "-o", tmp_path / "o", "--target", "label")
    _one_error_line(code, out, f"{twelve}: labels name 12 classes but the classifier has 10")


def test_target_label_on_unlabelled_input_names_the_file(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    bare = write_shards([Records(digits[0][:4])], tmp_path / "bare.h5", ShardSpec((1, 8, 8))).path
    code, out = _run("explain", digits_bundle, bare, "-o", tmp_path / "o", "--target", "label")
    _one_error_line(code, out, f"{bare}: target 'label' needs labels")


def test_a_truncated_npz_is_one_line(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    np.savez(whole, images=np.zeros((100, 8, 8), np.uint8), labels=np.zeros(100, np.int64))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    code, out = _run("ingest", "arrays", cut, "-o", tmp_path / "o")
    _one_error_line(code, out, f"{cut}: cannot load as .npy/.npz (truncated or corrupt?)")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ----------------------------------------------------------------------------- kills


def test_a_kill_between_the_rename_and_the_cleanup(
    digits_bundle: Path, shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shard = shards / "test-00000.h5"
    assert _run("explain", digits_bundle, shard, "-o", out, *CHEAP)[0] == 0
    finished = (out / "test-00000.h5").read_bytes()
    parts = out / "test-00000.h5.parts"  # as the run left it just before removing it
    parts.mkdir()
    (parts / "chunk-000000.h5").write_bytes(b"a committed chunk")
    (parts / "job.json").write_text("{}")
    assert _run("explain", digits_bundle, shard, "-o", out, *CHEAP)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["test-00000.h5"]
    assert (out / "test-00000.h5").read_bytes() == finished


def _with_nan(path: Path, images: np.ndarray, bad: int) -> Path:
    images = images[:12].astype(np.float32) / 255
    write_shards([Records(images)], path, ShardSpec((1, 8, 8), dtype="float32"))
    with h5py.File(path, "r+") as file:  # the writer refuses NaN: corrupt it afterwards
        file["images"][bad, 0, 3, 3] = np.nan
    return path


@pytest.mark.parametrize("bad", [1, 9])  # in the first batch (nothing committed), in the third
def test_the_remedy_a_bad_image_suggests_works_without_overwrite(
    bad: int, digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    shard, out = _with_nan(tmp_path / "nan.h5", digits[0], bad), tmp_path / "out"
    code, message = _run("explain", digits_bundle, shard, "-o", out, *CHEAP)
    _one_error_line(code, message, f"{shard}", f"NaN or Inf pixels in image {bad}")
    assert "--on-bad-image skip" in message
    parts = out / "nan.h5.parts"
    assert parts.exists() == (bad == 9)  # committed batches are kept to resume
    skip = ["--on-bad-image", "skip"]
    code, message = _run("explain", digits_bundle, shard, "-o", out, *CHEAP, *skip)
    assert code == 0, message
    assert sorted(p.name for p in out.iterdir()) == ["nan.h5"]
    with h5py.File(out / "nan.h5") as file:
        assert np.flatnonzero(file["flags/zero"][()]).tolist() == [bad]
        assert np.isfinite(file["attributions/zero"][()][np.arange(12) != bad]).all()


def test_only_a_stopping_run_is_resumed_by_a_skipping_one(tmp_path: Path) -> None:
    """Chunks of a stopping run hold no bad image, and a skipping run explains them alike; a
    skipping run's chunks may hold skipped images, which a stopping run must not take."""
    from tig_batch._results import OutputLayout, ResultWriter
    from tig_batch.errors import DataError

    def job(on_bad_image: str) -> dict:
        return {"config": {"n_steps": 4, "on_bad_image": on_bad_image}, "batch_size": 4}

    layout, output = OutputLayout(8, 4), tmp_path / "out.h5"
    for recorded, rerun, resumes in (("error", "skip", True), ("skip", "error", False)):
        shutil.rmtree(tmp_path / "out.h5.parts", ignore_errors=True)
        ResultWriter(output, layout, job(recorded), overwrite=False)
        (tmp_path / "out.h5.parts" / "chunk-000000.h5").write_bytes(b"committed")
        if resumes:
            assert ResultWriter(output, layout, job(rerun), overwrite=False).pending() == [1]
        else:
            with pytest.raises(DataError, match="was started with another configuration"):
                ResultWriter(output, layout, job(rerun), overwrite=False)
