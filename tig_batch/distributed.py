"""Run a job on a Dask cluster: one task per input shard, the bundle loaded once per worker.

:class:`DaskScheduler` is the scheduler :func:`tig_batch.run` takes for Dask. The client plans
the job (every shard checked against the bundle's manifest before any worker starts); each
task carries the :class:`~tig_batch.job.Job`, the manifest digest the client checked and one
shard (and Expected Gradients' reference images, read by the client and scattered to every
worker once), and runs :func:`tig_batch.runner.run_shard` on a worker, the function the local
scheduler runs, so outputs, crash-safety and resuming are exactly the local scheduler's.
Workers need the bundle, the inputs and the output directory at the same paths as the client
(a shared file system).

ONNX Runtime sessions cannot be pickled, so each worker process opens the bundle the job names
and keeps the one it last opened.

Progress: a worker logs ``(shard, images done)`` on a Dask event topic after every committed
batch; the client keeps the largest count per shard (a retried task resumes from its committed
batches, so counts never go back) and reports the growth of their sum, so the total is exact
even when workers die.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tig_batch._references import References
from tig_batch.backends import Bundle, Runtime
from tig_batch.errors import TigBatchError
from tig_batch.job import Job, Plan, ShardTask
from tig_batch.runner import open_bundle, run_shard

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DaskScheduler", "ShardFailure", "ShardsFailedError"]

INSTALL_HINT = "the Dask scheduler needs Dask: pip install 'tig-batch[dask]'"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ShardFailure:
    """A shard whose task failed: the error as one line, and the worker's traceback if any."""

    shard: Path
    error: str
    traceback: str | None = None


class ShardsFailedError(TigBatchError):
    """Some shards failed; the others' outputs are finished and kept. A rerun does the rest."""

    def __init__(self, failures: Sequence[ShardFailure], outputs: Sequence[Path]) -> None:
        self.failures = tuple(failures)
        self.outputs = tuple(outputs)
        lines = [f"{f.shard.name}: {f.error}" for f in self.failures]
        super().__init__(
            f"{len(self.failures)} of {len(self.failures) + len(self.outputs)} shard(s) "
            "failed (finished outputs are kept; rerun the same command to complete the rest):\n"
            + "\n".join(lines)
        )


@dataclass(frozen=True)
class DaskScheduler:
    """Every shard one Dask task. Give exactly one of ``address`` (a running scheduler,
    ``tcp://host:port``), ``n_workers`` (start a local cluster of that many single-threaded
    worker processes, closed when the run ends) or ``client`` (a connected
    :class:`distributed.Client`, left open).

    With ``n_workers`` and no ``threads`` in the job's runtime, each worker process gets its
    share of this machine's cores. If some shards fail the others still finish, and
    :class:`ShardsFailedError` lists the failures with their errors.
    """

    address: str | None = None
    n_workers: int | None = None
    client: Client | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.address, self.n_workers, self.client)) != 1:
            raise ValueError("give exactly one of address, n_workers or client")
        _import_distributed()  # before any work: say how to install it

    def run(self, plan: Plan, on_images: Callable[[int], None] | None = None) -> list[Path]:
        job = _absolute(plan.job)
        if self.n_workers and job.runtime.threads is None:
            threads = max(1, (os.cpu_count() or 1) // self.n_workers)
            job = dataclasses.replace(
                job, runtime=dataclasses.replace(job.runtime, threads=threads)
            )
        tasks = tuple(dataclasses.replace(t, shard=t.shard.absolute()) for t in plan.tasks)
        with _connected(self.address, self.n_workers, self.client) as connected:
            return _run(connected, dataclasses.replace(plan, job=job, tasks=tasks), on_images)


def _absolute(job: Job) -> Job:
    """Workers may run elsewhere (with another working directory): absolute paths only."""
    return dataclasses.replace(job, bundle=job.bundle.resolve(), output=job.output.resolve())


def _run(client: Client, plan: Plan, on_images: Callable[[int], None] | None) -> list[Path]:
    job, digest, tasks = plan.job, plan.bundle_digest, plan.tasks
    # read once by the client, sent once to every worker rather than with every task
    references = plan.references
    if references is not None:
        references = client.scatter(references, broadcast=True)
    run = uuid.uuid4().hex[:12]
    topic = f"tig-batch-progress-{run}"
    done = [0] * len(tasks)  # largest image count heard of, per shard
    lock = threading.Lock()

    def heard(event: tuple[float, Any]) -> None:  # on the client's event-loop thread
        index, count = event[1]
        with lock:
            done[index] = max(done[index], count)

    client.subscribe_topic(topic, heard)
    futures = []
    for index, task in enumerate(tasks):
        key = f"tig-batch-explain-{task.output_name}-{run}"
        arguments = (job, digest, task, topic, index, references)
        futures.append(client.submit(_worker_task, *arguments, key=key, pure=False))
    reported = 0
    outputs: dict[int, Path] = {}
    failures: dict[int, ShardFailure] = {}
    try:
        while len(outputs) + len(failures) < len(tasks):
            for index, future in enumerate(futures):
                if index in outputs or index in failures or not future.done():
                    continue
                if future.status == "finished":
                    outputs[index] = future.result()
                    with lock:
                        done[index] = tasks[index].count
                else:
                    failures[index] = _failure(tasks[index], future)
            with lock:
                total = sum(done)
            if on_images and total > reported:
                on_images(total - reported)
                reported = total
            if len(outputs) + len(failures) < len(tasks):
                time.sleep(POLL_SECONDS)
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:  # interrupted: stop the work this client asked for
            client.cancel(pending)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    if failures:
        raise ShardsFailedError(
            [failures[i] for i in sorted(failures)], [outputs[i] for i in sorted(outputs)]
        )
    return [outputs[i] for i in range(len(tasks))]


def _failure(task: ShardTask, future: Any) -> ShardFailure:
    if future.status != "error":
        return ShardFailure(task.shard, f"the task was {future.status} (scheduler lost?)")
    error = future.exception()
    message = " ".join(str(error).split())
    trace = None
    if not isinstance(error, TigBatchError):
        trace = "".join(traceback.format_tb(future.traceback())) or None
    return ShardFailure(task.shard, f"{type(error).__name__}: {message}", trace)


@contextlib.contextmanager
def _connected(
    address: str | None, n_workers: int | None, client: Client | None
) -> Iterator[Client]:
    distributed = _import_distributed()
    if client is not None:
        yield client
        return
    if n_workers is not None:
        with (
            distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                dashboard_address=None, host="127.0.0.1",
            ) as cluster,
            distributed.Client(cluster) as local,
        ):  # fmt: skip
            yield local
        return
    try:
        remote = distributed.Client(address)
    except (OSError, TimeoutError, ValueError) as error:
        raise TigBatchError(
            f"cannot connect to the Dask scheduler at {address} ({error}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`"
        ) from None
    with remote:
        yield remote


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise TigBatchError(INSTALL_HINT) from None
    return distributed


# ---------------------------------------------------------------------------- on the workers

_BUNDLES: dict[tuple[Path, Runtime, str], Bundle] = {}
_BUNDLES_LOCK = threading.Lock()


def _worker_bundle(job: Job, digest: str) -> Bundle:
    """The job's bundle, opened once per process and reused by every later task of the same
    bundle and runtime. Only the last bundle is kept. Raises
    :class:`~tig_batch.errors.ModelError` if the bundle on this worker is not the one the
    client checked (another file at that path, or changed since)."""
    key = (job.bundle, job.runtime, digest)
    with _BUNDLES_LOCK:
        if key not in _BUNDLES:
            _BUNDLES.clear()
            _BUNDLES[key] = open_bundle(job, digest)
        return _BUNDLES[key]


def _worker_task(
    job: Job, digest: str, task: ShardTask, topic: str, index: int, references: References | None
) -> Path:
    from distributed import get_worker

    worker = get_worker()
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        worker.log_event(topic, (index, done))

    with job.runtime.torch_threads():
        bundle = _worker_bundle(job, digest)
        return run_shard(bundle, Plan(job, digest, (task,), references), task, report)
