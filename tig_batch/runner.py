"""Run a :class:`~tig_batch.job.Job`: HDF5 shards in, one resumable HDF5 output per shard.

:func:`run` plans the job (unless given a plan) and hands the plan to a scheduler. Every
scheduler runs :func:`run_shard` per shard, so outputs, crash-safety and resuming are the
same whichever ran: :class:`LocalScheduler` here, one shard after another in this process,
or :class:`tig_batch.distributed.DaskScheduler` on a cluster.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tig_batch._bundle import manifest_digest
from tig_batch._results import OutputLayout, ResultWriter, remove_parts
from tig_batch.backends import Bundle, load_bundle
from tig_batch.data import iter_rows
from tig_batch.errors import DataError, ModelError
from tig_batch.job import Job, Plan, ShardTask, job_record, plan
from tig_batch.pipeline import Explanations, explain_batches

OnImages = Callable[[int], None]


class Scheduler(Protocol):
    """Runs a plan's shard tasks, each with :func:`run_shard`; the outputs, in task order."""

    def run(self, plan: Plan, on_images: OnImages | None) -> list[Path]: ...


@dataclass(frozen=True)
class LocalScheduler:
    """Shard after shard in this process, with the bundle opened once."""

    def run(self, plan: Plan, on_images: OnImages | None = None) -> list[Path]:
        with plan.job.runtime.torch_threads():
            bundle = open_bundle(plan.job, plan.bundle_digest)
            return [run_shard(bundle, plan, task, on_images) for task in plan.tasks]


def run(
    job: Job | Plan, scheduler: Scheduler | None = None, on_images: OnImages | None = None
) -> list[Path]:
    """Explain every shard of ``job`` into its output directory; the outputs, in order.

    ``job`` is planned first unless it is a :class:`~tig_batch.job.Plan` already (plan once
    to know the total for a progress bar, then run the plan). ``scheduler`` defaults to
    :class:`LocalScheduler`. Finished outputs of the same job are kept, partial ones resume;
    ``on_images(n)`` hears of images as they are done (or found done).
    """
    planned = job if isinstance(job, Plan) else plan(job)
    make_output_dir(planned.job.output)
    return (scheduler or LocalScheduler()).run(planned, on_images)


def make_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"{output_dir}: cannot create the output directory ({error.strerror})"
        ) from None


def open_bundle(job: Job, digest: str) -> Bundle:
    """The job's bundle opened with its runtime, refused unless it is the one planned (a
    worker on another machine may see other files at the same path)."""
    if manifest_digest(job.bundle) != digest:
        raise ModelError(
            f"{job.bundle}: this process ({os.uname().nodename}) sees another bundle than the "
            "one planned; workers need the same files at the same paths"
        )
    return load_bundle(job.bundle, job.runtime)


def run_shard(
    bundle: Bundle, plan: Plan, task: ShardTask, on_images: OnImages | None = None
) -> Path:
    """One shard: keep its finished output of this same job, else explain it, resuming from
    its committed batches. What every scheduler runs per shard."""
    record = job_record(plan, task)
    output = plan.job.output / task.output_name
    if not plan.job.storage.overwrite and finished_output(output, record):
        remove_parts(output)  # left when a run was killed between its rename and its cleanup
        if on_images:
            on_images(task.count)
        return output
    return _explain_shard(bundle, plan, task, record, on_images)


def finished_output(path: Path, record: dict[str, Any]) -> Path | None:
    """``path`` if it is a finished output of exactly this job, else None."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            recorded = json.loads(file.attrs["job"])
    except (OSError, KeyError, ValueError):
        return None
    return path if recorded == record else None


def _explain_shard(
    bundle: Bundle, plan: Plan, task: ShardTask, record: dict[str, Any], on_images: OnImages | None
) -> Path:
    job, storage = plan.job, plan.job.storage
    layout = OutputLayout(task.count, storage.batch_size, storage.dtype, storage.compression)
    writer = ResultWriter(job.output / task.output_name, layout, record, storage.overwrite)
    pending = set(writer.pending())
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if on_images:
        on_images(task.count - sum(layout.count(chunk) for chunk in pending))
    rows = np.arange(task.count) if task.rows is None else task.rows
    batches = iter_rows(
        task.dataset, task.shard, rows, storage.batch_size, offset=task.first_id,
        allow_non_finite=job.config.on_bad_image == "skip",
    )  # fmt: skip
    # the same iterator a Python pipeline uses; tee hands each batch's ids to the writer
    todo, todo_ids = itertools.tee(b for b in batches if b.start // storage.batch_size in pending)
    references = None if plan.references is None else plan.references.images
    results = explain_batches(
        bundle.classifier, bundle.manifold, todo, job.config, task.first_id,
        job.runtime.device, job.runtime.internal_batch_size, references,
    )  # fmt: skip
    try:
        for batch, result in zip(todo_ids, _naming(task.shard, results), strict=True):
            writer.write_chunk(batch.start // storage.batch_size, result, np.asarray(batch.ids))
            if on_images:
                on_images(len(batch))
    except BaseException:
        writer.abandon()
        raise
    attrs = {} if plan.references is None else {"reference_data": str(plan.references.path)}
    writer.finish(
        {
            **attrs,
            "bundle_manifest_sha256": plan.bundle_digest,
            "input_shard": str(task.shard.resolve()),
            "input_size": record["input"]["size"],
            "input_sha256": record["input"]["sha256"],
            "runtime": json.dumps(dataclasses.asdict(job.runtime), sort_keys=True),
            "versions": json.dumps(_versions()),
            "started_at": started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    return writer.output


def _naming(shard: Path, results: Iterator[Explanations]) -> Iterator[Explanations]:
    """``results``, with the shard named in data errors that do not name it (bad pixels)."""
    try:
        yield from results
    except DataError as error:
        if str(shard) in str(error):
            raise
        raise DataError(f"{shard}: {error}") from None


def _versions() -> dict[str, str]:
    found = {}
    for name in ("tig-batch", "torch", "onnxruntime", "numpy", "h5py"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
