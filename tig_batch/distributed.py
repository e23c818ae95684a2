"""Explain datasets on a Dask cluster: one task per input shard, the bundle loaded once per worker.

The client plans the shards and checks them against the bundle's manifest; each task runs
:func:`tig_batch.runner.run_task` on a worker, the same function the local scheduler runs, so
outputs, crash-safety and resuming are exactly the local scheduler's. Workers need the bundle,
the inputs and the output directory at the same paths as the client (a shared file system).

ONNX Runtime sessions cannot be pickled, so tasks carry a :class:`BundleRef` (where the bundle
is and how to open it) and each worker process keeps the one bundle it last opened.

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

from tig_batch._bundle import manifest_digest, read_manifest
from tig_batch.backends import Bundle, SessionSettings, load_bundle
from tig_batch.backends._base import DEFAULT_INTERNAL_BATCH_SIZE
from tig_batch.backends._load import BackendName
from tig_batch.errors import ModelError, TigBatchError
from tig_batch.pipeline import ExplainConfig
from tig_batch.runner import (
    RunOptions,
    ShardTask,
    check_input,
    check_target,
    make_output_dir,
    plan,
    run_task,
)

if TYPE_CHECKING:
    from distributed import Client

INSTALL_HINT = "the Dask scheduler needs Dask: pip install 'tig-batch[dask]'"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class BundleRef:
    """What a task carries instead of the bundle: where it is, how to open it, and the
    ``manifest.json`` digest the client checked (a worker that sees another bundle refuses)."""

    path: Path
    backend: BackendName
    settings: SessionSettings
    internal_batch_size: int
    digest: str


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


def explain_dataset_dask(
    bundle: Path | str,
    inputs: Sequence[str | Path],
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    *,
    backend: BackendName = "onnx",
    settings: SessionSettings | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    address: str | None = None,
    n_workers: int | None = None,
    client: Client | None = None,
    on_images: Callable[[int], None] | None = None,
) -> list[Path]:
    """:func:`tig_batch.runner.explain_dataset` on a Dask cluster; the output paths, in order.

    Give exactly one of ``address`` (a running scheduler, ``tcp://host:port``), ``n_workers``
    (start a local cluster of that many single-threaded worker processes, closed on return)
    or ``client`` (a connected :class:`distributed.Client`, left open). Finished outputs of the
    same job are kept, partial ones resume. If some shards fail the others still finish, and
    :class:`ShardsFailedError` lists the failures with their errors.
    """
    if sum(x is not None for x in (address, n_workers, client)) != 1:
        raise ValueError("give exactly one of address, n_workers or client")
    _import_distributed()
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)  # checksums, before any worker starts
    ref = BundleRef(
        bundle, backend, settings or SessionSettings(), internal_batch_size,
        manifest_digest(bundle),
    )  # fmt: skip
    tasks = [_absolute(task) for task in plan(inputs, options.selection)]
    for task in tasks:
        check_input(manifest.input, bundle, task.dataset)
        check_target(config, manifest.n_classes, task.dataset)
    output_dir = Path(output_dir).resolve()
    make_output_dir(output_dir)
    with _connected(address, n_workers, client) as connected:
        return _run(connected, ref, tasks, output_dir, config, options, on_images)


def _run(
    client: Client,
    ref: BundleRef,
    tasks: list[ShardTask],
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    on_images: Callable[[int], None] | None,
) -> list[Path]:
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
        arguments = (ref, task, output_dir, config, options, topic, index)
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


def _absolute(task: ShardTask) -> ShardTask:
    """Workers may run elsewhere (with another working directory): absolute paths only."""
    return dataclasses.replace(task, shard=task.shard.resolve())


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

_BUNDLES: dict[BundleRef, Bundle] = {}
_BUNDLES_LOCK = threading.Lock()


def _worker_bundle(ref: BundleRef) -> Bundle:
    """The bundle ``ref`` names, opened once per process and reused by every later task.

    Only the last bundle is kept. Raises :class:`ModelError` if the bundle on this worker is
    not the one the client checked (another file at that path, or changed since).
    """
    with _BUNDLES_LOCK:
        if ref not in _BUNDLES:
            if manifest_digest(ref.path) != ref.digest:
                raise ModelError(
                    f"{ref.path}: this worker ({os.uname().nodename}) sees another bundle than "
                    "the client checked; workers need the same files at the same paths"
                )
            if ref.settings.threads:
                import torch

                torch.set_num_threads(ref.settings.threads)
            _BUNDLES.clear()
            _BUNDLES[ref] = load_bundle(
                ref.path, ref.backend, ref.settings, ref.internal_batch_size
            )
        return _BUNDLES[ref]


def _worker_task(
    ref: BundleRef,
    task: ShardTask,
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    topic: str,
    index: int,
) -> Path:
    from distributed import get_worker

    worker = get_worker()
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        worker.log_event(topic, (index, done))

    return run_task(_worker_bundle(ref), task, output_dir, config, options, report)
