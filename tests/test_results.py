"""Explain outputs: chunk commits, resume after a crash, refusals, and the merged file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tig_batch._results import OutputLayout, ResultWriter
from tig_batch.errors import DataError
from tig_batch.pipeline import Explanations


def _result(rows: range) -> Explanations:
    n = len(rows)
    base = torch.tensor(list(rows), dtype=torch.float32)
    attribution = base.view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    return Explanations(
        sample_ids=torch.tensor(list(rows)), target=torch.arange(n), prediction=torch.arange(n),
        tangent_rank=torch.full((n,), 3), chance_level=torch.full((n,), 0.5),
        attributions={"zero": attribution, "gradient": -attribution},
        alignment={"zero": base / 10, "gradient": base / 20},
        delta={"zero": base * 0}, output_gap={"zero": base + 1},
        flags={"zero": torch.zeros(n).long(), "gradient": torch.ones(n).long()},
    )  # fmt: skip


LAYOUT = OutputLayout(n_images=7, chunk_size=3)
JOB = {"config": {"n_steps": 8}, "input_sha256": "abc"}


def _write(writer: ResultWriter, chunks: list[int]) -> None:
    for chunk in chunks:
        rows = LAYOUT.rows(chunk)
        ids = np.array([f"img-{i}" for i in range(rows.start, rows.stop)])
        writer.write_chunk(chunk, _result(range(rows.start, rows.stop)), ids)


def test_chunks_merge_into_one_file_with_every_dataset(tmp_path: Path) -> None:
    output = tmp_path / "out.h5"
    writer = ResultWriter(output, LAYOUT, JOB, overwrite=False)
    assert writer.pending() == [0, 1, 2]
    _write(writer, [0, 1, 2])
    writer.finish({"input_shard": "shard-0.h5"})
    assert not writer.parts.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
    with h5py.File(output) as file:
        assert file["attributions/zero"].shape == (7, 1, 2, 2)
        np.testing.assert_array_equal(file["attributions/zero"][:, 0, 0, 0], np.arange(7))
        np.testing.assert_allclose(file["alignment/gradient"][:], np.arange(7) / 20)
        assert [i.decode() for i in file["ids"][:]] == [f"img-{i}" for i in range(7)]
        assert "delta/zero" in file and "delta/gradient" not in file
        assert file["flags/gradient"].dtype == np.uint8
        assert json.loads(file.attrs["job"]) == JOB and file.attrs["input_shard"] == "shard-0.h5"


def test_a_rerun_resumes_at_the_first_missing_chunk(tmp_path: Path) -> None:
    output = tmp_path / "out.h5"
    _write(ResultWriter(output, LAYOUT, JOB, overwrite=False), [0])
    (output.with_name("out.h5.parts") / "chunk-000001.h5.partial").write_bytes(b"torn write")
    resumed = ResultWriter(output, LAYOUT, JOB, overwrite=False)
    assert resumed.pending() == [1, 2]
    _write(resumed, [1, 2])
    resumed.finish({})
    with h5py.File(output) as file:
        np.testing.assert_array_equal(file["attributions/zero"][:, 0, 0, 0], np.arange(7))


def test_another_configuration_or_a_finished_output_is_refused_unless_overwrite(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out.h5"
    _write(ResultWriter(output, LAYOUT, JOB, overwrite=False), [0])
    other = {**JOB, "config": {"n_steps": 16}}
    with pytest.raises(
        DataError, match="started with another configuration; rerun with --overwrite"
    ):
        ResultWriter(output, LAYOUT, other, overwrite=False)
    fresh = ResultWriter(output, LAYOUT, other, overwrite=True)
    assert fresh.pending() == [0, 1, 2]
    _write(fresh, [0, 1, 2])
    fresh.finish({})
    with pytest.raises(DataError, match=r"out\.h5 exists"):
        ResultWriter(output, LAYOUT, other, overwrite=False)


def test_an_unwritable_directory_fails_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # a file where the output directory should be: fails even as root
    with pytest.raises(DataError, match="cannot write"):
        ResultWriter(blocker / "out.h5", LAYOUT, JOB, overwrite=False)


def test_a_failing_write_keeps_what_was_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.h5"
    writer = ResultWriter(output, LAYOUT, JOB, overwrite=False)
    _write(writer, [0])
    committed = (writer.parts / "chunk-000000.h5").read_bytes()
    real_file = h5py.File

    def disk_full(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if mode == "w":
            raise OSError(28, "No space left on device")
        return real_file(path, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", disk_full)
    with pytest.raises(DataError, match=r"write failed.*No space left on device"):
        _write(writer, [1])
    monkeypatch.undo()
    assert (writer.parts / "chunk-000000.h5").read_bytes() == committed
    assert sorted(p.name for p in writer.parts.iterdir()) == ["chunk-000000.h5", "job.json"]
    assert writer.pending() == [1, 2]
