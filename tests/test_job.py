"""The run spine: a Job planned once, then run by a scheduler; what its outputs record."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections import Counter
from pathlib import Path

import h5py
import pytest
import torch
from click.testing import CliRunner

import tig_batch as tig
import tig_batch.job as job_module
from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, write_shards
from tig_batch.errors import DataError
from tig_batch.job import Job, Storage, plan

CONFIG = tig.ExplainConfig(
    methods=("tangential", "zero", "uniform", "smoothgrad"), n_steps=6,
    search=tig.BaselineSearch(n_iterations=3, n_steps=2), smoothgrad_samples=2,
)  # fmt: skip
CHEAP = [
    "--methods", "tangential,zero,uniform,smoothgrad", "--n-steps", "6", "--search-iterations",
    "3", "--search-n-steps", "2", "--smoothgrad-samples", "2", "--batch-size", "5",
    "--threads", "1", "-q",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    images, labels = digits
    directory = tmp_path_factory.mktemp("job") / "data"
    spec = ShardSpec((1, 8, 8), class_names=tuple(map(str, range(10))), split="test")
    write_shards([Records(images[:20], labels[:20])], directory, spec, shard_size=8)
    return directory


@pytest.fixture(scope="module")
def bundle(untrained_bundle: Path) -> Path:
    return untrained_bundle


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts of planning (inputs opened), compatibility checks and shard hashes."""
    counted: Counter = Counter()

    def counting(name, function):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            counted[(name, Path(args[0]).name) if name == "sha256" else name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(job_module, "_open", counting("plan", job_module._open))
    monkeypatch.setattr(
        job_module, "check_compatible", counting("check", job_module.check_compatible)
    )
    monkeypatch.setattr(job_module, "sha256", counting("sha256", job_module.sha256))
    return counted


@pytest.fixture(autouse=True)
def _torch_threads():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_job_is_planned_checked_and_hashed_once_per_run_and_shard(
    bundle: Path, data: Path, tmp_path: Path, calls: Counter
) -> None:
    """Through the command line: the inputs are opened once (one plan), each shard is checked
    once and hashed once; a rerun that finds the outputs finished hashes each once more and
    explains none."""
    names = ("test-00000.h5", "test-00001.h5", "test-00002.h5")
    once = Counter({"plan": 1, "check": 3, **{("sha256", name): 1 for name in names}})
    for attempt in range(2):
        result = CliRunner().invoke(main, ["explain", str(bundle), str(data), "-o",
                                           str(tmp_path), *CHEAP])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert calls == once, attempt
        calls.clear()
    job = Job(bundle, (data,), tmp_path, CONFIG, tig.Runtime(threads=1), Storage(5))
    assert [p.name for p in tig.run(plan(job))] == list(names)
    assert calls == once


def test_the_job_record_is_what_determines_the_content(bundle: Path, data: Path) -> None:
    """The record every output carries: the configuration (one seed, the bundle's value
    range), the bundle, the backend, the shard, the storage; not how it was computed."""
    planned = plan(Job(bundle, (data,), Path("out"), CONFIG))
    record = job_module.job_record(planned, planned.tasks[0])
    assert set(record) == {
        "config", "bundle_manifest_sha256", "backend", "input", "batch_size", "dtype",
        "compression",
    }  # fmt: skip
    assert record["config"]["seed"] == 0 and "seed" not in record["config"]["search"]
    assert "internal_batch_size" not in record["config"]
    assert record["config"]["value_range"] == [0.0, 1.0]
    assert set(record["input"]) == {"name", "size", "sha256", "first_id"}
    faster = plan(
        Job(bundle, (data,), Path("out"), CONFIG, tig.Runtime(threads=2, internal_batch_size=7))
    )
    assert job_module.job_record(faster, faster.tasks[0]) == record
    other = plan(Job(bundle, (data,), Path("out"), CONFIG, tig.Runtime("torch")))
    assert job_module.job_record(other, other.tasks[0]) != record


def test_a_job_pickles_and_its_parts_refuse_bad_values(bundle: Path, data: Path) -> None:
    job = Job(bundle, (data,), Path("out"), CONFIG, tig.Runtime(threads=2), Storage(7))
    assert pickle.loads(pickle.dumps(job)) == job
    planned = plan(job)
    assert pickle.loads(pickle.dumps(planned.only(planned.tasks[1]))).tasks[0].shard == (
        planned.tasks[1].shard
    )
    for bad in (
        lambda: tig.Runtime(backend="tensorflow"), lambda: tig.Runtime(device="tpu"),
        lambda: tig.Runtime(threads=0), lambda: tig.Runtime(internal_batch_size=0),
        lambda: Storage(batch_size=0), lambda: Storage(dtype="int8"),  # type: ignore[arg-type]
        lambda: Storage(compression="zip"), lambda: Job(bundle, (), Path("out")),  # type: ignore[arg-type]
    ):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


def test_resume_keeps_the_job_and_another_job_needs_overwrite(
    bundle: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped after its first batch resumes under the same job, whatever the runtime
    (threads, samples per call), computing only the missing batches; a job that explains
    differently is refused until --overwrite."""
    from tig_batch._results import ResultWriter

    job = Job(bundle, (data.parent / "data" / "test-00000.h5",), tmp_path / "whole", CONFIG,
              tig.Runtime(threads=1), Storage(3))  # fmt: skip
    (whole,) = tig.run(job)
    written: list[int] = []
    original = ResultWriter.write_chunk

    def stop_after_one(self, chunk, result, ids):  # type: ignore[no-untyped-def]
        if written:
            raise KeyboardInterrupt
        written.append(chunk)
        original(self, chunk, result, ids)

    stopped = Job(job.bundle, job.inputs, tmp_path / "resumed", CONFIG, job.runtime, Storage(3))
    monkeypatch.setattr(ResultWriter, "write_chunk", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        tig.run(stopped)
    monkeypatch.setattr(
        ResultWriter, "write_chunk", lambda *a: written.append(a[1]) or original(*a)
    )
    faster = tig.Runtime(threads=2, internal_batch_size=7)
    (resumed,) = tig.run(Job(job.bundle, job.inputs, stopped.output, CONFIG, faster, Storage(3)))
    assert written == [0, 1, 2]  # the first batch before the stop, then only the missing ones
    with h5py.File(whole, "r") as want, h5py.File(resumed, "r") as got:
        assert got.attrs["job"] == want.attrs["job"]
        assert json.loads(got.attrs["runtime"])["internal_batch_size"] == 7
        for name in ("alignment/tangential", "attributions/uniform", "baselines/tangential"):
            torch.testing.assert_close(got[name][()], want[name][()], rtol=1e-3, atol=1e-4)

    reseeded = dataclasses.replace(CONFIG, seed=1)
    other = Job(job.bundle, job.inputs, stopped.output, reseeded, storage=Storage(3))
    with pytest.raises(DataError, match="exists; rerun with --overwrite to replace it"):
        tig.run(other)
    replaced = Storage(3, overwrite=True)
    (overwritten,) = tig.run(Job(job.bundle, job.inputs, stopped.output, other.config,
                                 storage=replaced))  # fmt: skip
    with h5py.File(overwritten, "r") as file:
        assert json.loads(file.attrs["job"])["config"]["seed"] == 1
