"""The Dask scheduler: same outputs as the local one, killed workers, failed shards, reruns.

Three shards of twelve 8x8 digits and a tiny exported bundle; one module-wide LocalCluster of
two worker processes (the --dask-address path), plus one `--workers 2` run that starts its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import torch
from click.testing import CliRunner, Result

from tig_batch.backends import Runtime
from tig_batch.cli import main
from tig_batch.data import Records, ShardSpec, write_shards
from tig_batch.distributed import DaskScheduler
from tig_batch.engine import BaselineSearch
from tig_batch.errors import TigBatchError
from tig_batch.job import Job, Storage
from tig_batch.pipeline import ExplainConfig
from tig_batch.runner import run

SHARDS, PER_SHARD = 3, 12
CHEAP = [
    "--methods", "tangential,zero,gradient", "--n-steps", "8", "--search-iterations", "3",
    "--search-n-steps", "4", "--batch-size", "4", "--threads", "1",
]  # fmt: skip
NAMES = ("test-00000.h5", "test-00001.h5", "test-00002.h5")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:
    images, labels = digits
    n = SHARDS * PER_SHARD
    directory = tmp_path_factory.mktemp("dask") / "data"
    spec = ShardSpec((1, 8, 8), class_names=tuple(map(str, range(10))), split="test")
    write_shards([Records(images[:n], labels[:n])], directory, spec, shard_size=PER_SHARD)
    assert sorted(p.name for p in directory.iterdir()) == list(NAMES)
    return directory


@pytest.fixture(scope="module")
def bundle(untrained_bundle: Path) -> Path:
    return untrained_bundle


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """The CLI's --threads sets torch's thread count for the whole process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _explain(bundle: Path, data: Path, output: Path, *options: str) -> Result:
    arguments = ["explain", str(bundle), str(data), "-o", str(output), *CHEAP, *options]
    return CliRunner().invoke(main, arguments)


@pytest.fixture(scope="module")
def reference(bundle: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local scheduler's outputs: what every Dask run must reproduce."""
    threads = torch.get_num_threads()
    output = tmp_path_factory.mktemp("dask") / "reference"
    result = _explain(bundle, data, output, "--scheduler", "local", "-q")
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return output


def _children() -> list[psutil.Process]:
    """This process's live children, after giving closing ones a few seconds to exit.

    multiprocessing's resource tracker is left out: one per process, it lives as long as its
    parent, by design."""
    deadline = time.monotonic() + 10
    while True:
        alive = []
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE and not any(
                    "resource_tracker" in part for part in process.cmdline()
                ):
                    alive.append(process)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    """Two single-threaded worker processes behind a scheduler on loopback; always closed."""
    from distributed import Client, LocalCluster

    before = {p.pid for p in _children()}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            host="127.0.0.1",
        ) as local,
        Client(local) as client,
    ):  # fmt: skip
        yield local, client
    leaked = [p for p in _children() if p.pid not in before]
    assert not leaked, f"worker processes left running: {leaked}"


def _assert_same_outputs(expected: Path, actual: Path, names: tuple[str, ...] = NAMES) -> None:
    """Every dataset equal, and the recorded job (configuration, bundle, input) the same."""
    for name in names:
        with h5py.File(expected / name, "r") as want, h5py.File(actual / name, "r") as got:
            assert got.attrs["job"] == want.attrs["job"]
            datasets = _datasets(want)
            assert datasets and datasets == _datasets(got)
            for dataset in datasets:
                values = want[dataset][()]
                nan_ok = np.asarray(values).dtype.kind == "f"  # NaN: a frontier with no iterate
                assert np.array_equal(got[dataset][()], values, equal_nan=nan_ok), (
                    f"{name}:{dataset}"
                )


def _datasets(file: h5py.File) -> list[str]:
    found: list[str] = []
    file.visit(lambda n: found.append(n) if isinstance(file[n], h5py.Dataset) else None)
    return found


def _arm_kill(marker: str) -> None:
    """On a worker: SIGKILL this process as it starts its second batch, once over the cluster
    (the first worker to create ``marker``), so one shard dies with a committed batch."""
    import tig_batch.pipeline as pipeline  # explain_batches calls pipeline.explain per batch

    original = getattr(pipeline, "_test_original_explain", pipeline.explain)
    pipeline._test_original_explain = original  # type: ignore[attr-defined]
    calls = []

    def explain(*args, **kwargs):
        calls.append(None)
        if len(calls) == 2:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    pipeline.explain = explain


def _disarm() -> None:
    import tig_batch.pipeline as pipeline

    pipeline.explain = getattr(pipeline, "_test_original_explain", pipeline.explain)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_local_cluster_of_two_workers_writes_what_the_local_scheduler_writes(
    bundle: Path, data: Path, reference: Path, tmp_path: Path
) -> None:
    before = {p.pid for p in _children()}
    result = _explain(bundle, data, tmp_path, "--scheduler", "dask", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"Wrote 3 file(s) to {tmp_path}." in result.stdout
    assert "36.0/36.0" in result.stderr  # one bar over all images, no image counted twice
    _assert_same_outputs(reference, tmp_path)
    assert not [p for p in _children() if p.pid not in before], "the local cluster was not closed"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_worker_fails_its_shard_keeps_the_others_and_a_rerun_completes(
    bundle: Path, data: Path, reference: Path, cluster, tmp_path: Path
) -> None:
    local, client = cluster
    client.wait_for_workers(2, timeout=60)  # the nanny restarts killed workers
    output = tmp_path / "out"
    local.scheduler.allowed_failures = 0  # no retry on another worker: the shard fails
    client.run(_arm_kill, str(tmp_path / "killed"))
    try:
        first = _explain(bundle, data, output, "--scheduler", "dask", "--dask-address",
                         local.scheduler_address)  # fmt: skip
    finally:
        local.scheduler.allowed_failures = 3
        client.run(_disarm)
    assert (tmp_path / "killed").exists()
    assert first.exit_code == 2, first.output
    failed = [name for name in NAMES if f"failed: {data / name}: KilledWorker: " in first.stderr]
    assert failed and "shard(s) failed; the" in first.stderr
    assert "rerun the same command to complete the rest" in first.stderr
    finished = tuple(name for name in NAMES if name not in failed)
    assert sorted(p.name for p in output.glob("*.h5")) == sorted(finished)
    _assert_same_outputs(reference, output, finished)
    killed = [output / f"{name}.parts" for name in failed]
    assert any(list(parts.glob("chunk-*.h5")) for parts in killed)  # its first batch is kept

    rerun = _explain(bundle, data, output, "--scheduler", "dask", "--dask-address",
                     local.scheduler_address)  # fmt: skip
    assert rerun.exit_code == 0, rerun.output
    _assert_same_outputs(reference, output)
    assert not list(output.glob("*.parts")) and not list(output.glob("*.partial"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_by_default_dask_retries_a_killed_workers_shard_which_resumes_there(
    bundle: Path, data: Path, reference: Path, cluster, tmp_path: Path
) -> None:
    _, client = cluster
    client.wait_for_workers(2, timeout=60)
    config = ExplainConfig(
        methods=("tangential", "zero", "gradient"), n_steps=8,
        search=BaselineSearch(n_iterations=3, n_steps=4),
    )  # fmt: skip
    progress: list[int] = []
    client.run(_arm_kill, str(tmp_path / "killed"))
    try:
        job = Job(bundle, (data,), tmp_path, config, Runtime(threads=1), Storage(batch_size=4))
        outputs = run(job, DaskScheduler(client=client), progress.append)
    finally:
        client.run(_disarm)
    assert (tmp_path / "killed").exists()
    assert outputs == [tmp_path / name for name in NAMES]
    assert sum(progress) == SHARDS * PER_SHARD  # the retried shard's first batch counted once
    _assert_same_outputs(reference, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_failed_shards_are_listed_with_their_errors_and_finished_ones_kept(
    bundle: Path, data: Path, reference: Path, cluster, tmp_path: Path
) -> None:
    local, _ = cluster
    (tmp_path / NAMES[1]).write_bytes(b"not an output of this job")
    result = _explain(bundle, data, tmp_path, "--scheduler", "dask", "--dask-address",
                      local.scheduler_address)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        f"failed: {data / NAMES[1]}: DataError: {tmp_path / NAMES[1]} exists; rerun with "
        "--overwrite to replace it\n"
    ) in result.stderr
    assert (
        f"Error: 1 of 3 shard(s) failed; the 2 finished output(s) are kept in {tmp_path}: "
        "rerun the same command to complete the rest\n"
    ) in result.stderr
    _assert_same_outputs(reference, tmp_path, (NAMES[0], NAMES[2]))
    assert (tmp_path / NAMES[1]).read_bytes() == b"not an output of this job"


def test_the_dask_scheduler_without_dask_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(TigBatchError, match=r"pip install 'tig-batch\[dask\]'"):
        DaskScheduler(n_workers=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "2"], "--dask-address and --workers go with --scheduler dask"),
        (["--scheduler", "dask"], "--scheduler dask needs --dask-address or --workers"),
        (
            ["--scheduler", "dask", "--workers", "2", "--dask-address", "tcp://127.0.0.1:1"],
            "--scheduler dask needs --dask-address or --workers (one of them)",
        ),
    ],
)
def test_scheduler_options_are_checked(tmp_path: Path, options: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["explain", str(tmp_path), "x", "-o", "out", *options])
    assert result.exit_code == 2
    assert message in result.stderr
