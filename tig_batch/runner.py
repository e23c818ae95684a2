"""Explain whole datasets shard by shard: HDF5 in, HDF5 out, resumable.

One input shard gives one output file (``<output_dir>/<shard name>``). Every shard is a
self-contained task, which is what lets the Dask scheduler hand shards to other machines.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tig_batch._bundle import InputSpec, manifest_digest, sha256
from tig_batch._results import OutputLayout, ResultWriter, remove_parts
from tig_batch._selection import Selection, rows_digest, selected_rows
from tig_batch.backends import Bundle, SessionSettings, load_bundle
from tig_batch.data import DatasetInfo, iter_rows, open_dataset
from tig_batch.errors import DataError, ModelError
from tig_batch.job import Job, Plan, job_record
from tig_batch.job import ShardTask as JobTask
from tig_batch.job import plan as plan_job
from tig_batch.pipeline import ExplainConfig, Explanations, explain_batches


@dataclass(frozen=True)
class RunOptions:
    """How results are read and stored (the explanations themselves are :class:`ExplainConfig`).

    ``batch_size`` images are explained and committed together: the unit of memory, of
    progress and of crash recovery. ``selection`` picks the images to explain (all by
    default); an output then holds the selected images of its shard, in order.
    """

    batch_size: int = 64
    dtype: str = "float32"
    compression: str | None = "gzip"
    overwrite: bool = False
    device: str = "cpu"
    selection: Selection = field(default_factory=Selection)


@dataclass(frozen=True)
class ShardTask:
    """One input shard to explain, with the dataset position of its first image (the seed key)
    and, when not every image is explained, the ``rows`` of the shard that are."""

    shard: Path
    count: int
    first_id: int
    dataset: DatasetInfo
    rows: np.ndarray | None = None

    @property
    def output_name(self) -> str:
        return self.shard.name


def plan(inputs: Sequence[str | Path], selection: Selection | None = None) -> list[ShardTask]:
    """Every shard of every input with images ``selection`` picks, in order, each numbered from
    its position in its dataset.

    Shards are validated up front, so a corrupt file fails before any work starts.
    """
    selection = selection or Selection()
    tasks: list[ShardTask] = []
    left = selection.limit
    for source in inputs:
        dataset = open_dataset(source)
        first = 0
        for shard in dataset.shards:
            if left == 0:
                break
            rows = None
            if not selection.everything:
                rows = selected_rows(dataset, shard.path, shard.count, first, selection)[:left]
                left = None if left is None else left - len(rows)
            count = shard.count if rows is None else len(rows)
            if count:
                tasks.append(ShardTask(shard.path, count, first, dataset, rows))
            first += shard.count
    if not tasks:
        raise DataError(f"--ids {','.join(selection.ids)} selects no image of the inputs")
    names = [task.output_name for task in tasks]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise DataError(
            f"several inputs have shards named {', '.join(clashes)}; their outputs would "
            "overwrite each other: explain them into separate --output directories"
        )
    return tasks


def check_compatible(bundle: Bundle, dataset: DatasetInfo) -> None:
    """Refuse data the bundle's models were not made for, naming the file and the mismatch."""
    check_input(bundle.manifest.input, bundle.path, dataset)


def check_input(expected: InputSpec, bundle_path: Path, dataset: DatasetInfo) -> None:
    """:func:`check_compatible` from a bundle's manifest alone (no models loaded)."""
    if tuple(dataset.shape) != tuple(expected.shape):
        raise DataError(
            f"{dataset.path}: images are {tuple(dataset.shape)} but the bundle "
            f"{bundle_path} expects {tuple(expected.shape)}"
        )
    if tuple(dataset.value_range) != tuple(expected.value_range):
        raise DataError(
            f"{dataset.path}: value range {tuple(dataset.value_range)} differs from the "
            f"bundle's {tuple(expected.value_range)}"
        )


def check_target(config: ExplainConfig, n_classes: int, dataset: DatasetInfo) -> None:
    """Refuse a target the classifier has no output for, or labels the data does not have."""
    target = config.target
    if isinstance(target, int) and not 0 <= target < n_classes:
        raise DataError(
            f"target class {target} does not exist: the classifier has {n_classes} classes "
            f"(0 to {n_classes - 1})"
        )
    if target != "label":
        return
    if not dataset.has_labels:
        raise DataError(
            f"{dataset.path}: target 'label' needs labels, and this dataset has none; explain "
            "the predicted class (--target predicted) or a class index"
        )
    if dataset.num_classes > n_classes:
        raise DataError(
            f"{dataset.path}: labels name {dataset.num_classes} classes but the classifier has "
            f"{n_classes}; explain the predicted class (--target predicted)"
        )


def _task_config(config: ExplainConfig, task: ShardTask) -> ExplainConfig:
    """The configuration a shard is explained with: its dataset's value range."""
    return dataclasses.replace(config, value_range=tuple(task.dataset.value_range))


def _job(bundle: Bundle, task: ShardTask, config: ExplainConfig, options: RunOptions) -> dict:
    """Everything that determines an output's content; a resume must match it exactly."""
    config = _task_config(config, task)
    return json.loads(
        json.dumps(
            {
                "config": dataclasses.asdict(config),
                "bundle_manifest_sha256": manifest_digest(bundle.path),
                "backend": bundle.backend,
                "input": {
                    "name": task.shard.name,
                    "size": task.shard.stat().st_size,
                    "sha256": sha256(task.shard),
                    "first_id": task.first_id,
                    **_rows_record(task),
                },
                "batch_size": options.batch_size,
                "dtype": options.dtype,
                "compression": options.compression,
            },
            sort_keys=True,
        )
    )


def _rows_record(task: ShardTask) -> dict[str, Any]:
    """A selection's part of the job (nothing when every image is explained)."""
    if task.rows is None:
        return {}
    return {"rows": {"count": len(task.rows), "sha256": rows_digest(task.rows)}}


def _versions() -> dict[str, str]:
    found = {}
    for name in ("tig-batch", "torch", "onnxruntime", "numpy", "h5py"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def explain_shard(
    bundle: Bundle,
    task: ShardTask,
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    on_images: Callable[[int], None] | None = None,
) -> Path:
    """Explain one shard into ``output_dir``, resuming from committed chunks; the output path.

    ``on_images(n)`` is called as images are done (or found done), for progress bars.
    """
    check_compatible(bundle, task.dataset)
    config = _task_config(config, task)
    job = _job(bundle, task, config, options)
    layout = OutputLayout(task.count, options.batch_size, options.dtype, options.compression)
    writer = ResultWriter(output_dir / task.output_name, layout, job, options.overwrite)
    pending = set(writer.pending())
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if on_images:
        on_images(task.count - sum(layout.count(chunk) for chunk in pending))
    rows = np.arange(task.count) if task.rows is None else task.rows
    batches = iter_rows(
        task.dataset, task.shard, rows, options.batch_size, offset=task.first_id,
        allow_non_finite=config.on_bad_image == "skip",
    )  # fmt: skip
    # the same iterator a Python pipeline uses; tee hands each batch's ids to the writer
    todo, todo_ids = itertools.tee(b for b in batches if b.start // options.batch_size in pending)
    results = explain_batches(
        bundle.classifier, bundle.manifold, todo, config, task.first_id, options.device
    )
    try:
        for batch, result in zip(todo_ids, _naming(task.shard, results), strict=True):
            writer.write_chunk(batch.start // options.batch_size, result, np.asarray(batch.ids))
            if on_images:
                on_images(len(batch))
    except BaseException:
        writer.abandon()
        raise
    writer.finish(
        {
            "bundle_manifest_sha256": job["bundle_manifest_sha256"],
            "input_shard": str(task.shard.resolve()),
            "input_size": job["input"]["size"],
            "input_sha256": job["input"]["sha256"],
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


def explain_dataset(
    bundle: Bundle,
    inputs: Sequence[str | Path],
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    on_images: Callable[[int], None] | None = None,
) -> list[Path]:
    """Explain every shard of ``inputs`` into ``output_dir``, skipping finished outputs.

    A finished output is kept (not recomputed) when its job matches; rerunning after a crash
    therefore completes only what is missing.
    """
    tasks = plan(inputs, options.selection)
    for task in tasks:
        check_compatible(bundle, task.dataset)
        check_target(config, bundle.manifest.n_classes, task.dataset)
    make_output_dir(output_dir)
    return [run_task(bundle, task, output_dir, config, options, on_images) for task in tasks]


def make_output_dir(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"{output_dir}: cannot create the output directory ({error.strerror})"
        ) from None


def run_task(
    bundle: Bundle,
    task: ShardTask,
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    on_images: Callable[[int], None] | None = None,
) -> Path:
    """One scheduled task: keep a finished output of this same job, else :func:`explain_shard`.

    What every scheduler runs per shard (the local loop, a Dask worker), so a rerun after a
    crash completes only what is missing, whichever scheduler ran before.
    """
    done = finished_output(output_dir / task.output_name, _job(bundle, task, config, options))
    if done and not options.overwrite:
        remove_parts(done)  # left when a run was killed between its rename and its cleanup
        if on_images:
            on_images(task.count)
        return done
    return explain_shard(bundle, task, output_dir, config, options, on_images)


def finished_output(path: Path, job: dict[str, Any]) -> Path | None:
    """``path`` if it is a finished output of exactly this job, else None."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            recorded = json.loads(file.attrs["job"])
    except (OSError, KeyError, ValueError):
        return None
    return path if recorded == job else None


# ------------------------------------------------------------------ the run spine: run(job)


class Scheduler(Protocol):
    """Runs a plan's shard tasks (each with :func:`run_shard`); the outputs, in task order."""

    def run(self, plan: Plan, on_images: Callable[[int], None] | None) -> list[Path]: ...


@dataclass(frozen=True)
class LocalScheduler:
    """Shard after shard in this process, with the bundle opened once."""

    def run(self, plan: Plan, on_images: Callable[[int], None] | None = None) -> list[Path]:
        with plan.job.runtime.torch_threads():
            bundle = open_bundle(plan.job, plan.bundle_digest)
            return [run_shard(bundle, plan, task, on_images) for task in plan.tasks]


def run(
    job: Job | Plan,
    scheduler: Scheduler | None = None,
    on_images: Callable[[int], None] | None = None,
) -> list[Path]:
    """Explain every shard of ``job`` into its output directory; the outputs, in order.

    ``job`` is planned first unless it is a :class:`~tig_batch.job.Plan` already (plan once
    to know the total for a progress bar, then run the plan). ``scheduler`` defaults to
    :class:`LocalScheduler`; :class:`tig_batch.distributed.DaskScheduler` runs on Dask.
    Finished outputs of the same job are kept, partial ones resume; ``on_images(n)`` hears
    of images as they are done (or found done).
    """
    planned = job if isinstance(job, Plan) else plan_job(job)
    make_output_dir(planned.job.output)
    return (scheduler or LocalScheduler()).run(planned, on_images)


def open_bundle(job: Job, digest: str) -> Bundle:
    """The job's bundle opened with its runtime, refused unless it is the one planned."""
    if manifest_digest(job.bundle) != digest:
        raise ModelError(
            f"{job.bundle}: this process ({os.uname().nodename}) sees another bundle than the "
            "one planned; workers need the same files at the same paths"
        )
    runtime = job.runtime
    settings = SessionSettings(
        runtime.threads, runtime.graph_optimization, runtime.device, runtime.spin_wait
    )
    return load_bundle(job.bundle, runtime.backend, settings, runtime.internal_batch_size)


def run_shard(
    bundle: Bundle, plan: Plan, task: JobTask, on_images: Callable[[int], None] | None = None
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


def _explain_shard(
    bundle: Bundle,
    plan: Plan,
    task: JobTask,
    record: dict[str, Any],
    on_images: Callable[[int], None] | None,
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
    results = explain_batches(
        bundle.classifier, bundle.manifold, todo, job.config, task.first_id, job.runtime.device
    )
    try:
        for batch, result in zip(todo_ids, _naming(task.shard, results), strict=True):
            writer.write_chunk(batch.start // storage.batch_size, result, np.asarray(batch.ids))
            if on_images:
                on_images(len(batch))
    except BaseException:
        writer.abandon()
        raise
    writer.finish(
        {
            "bundle_manifest_sha256": plan.bundle_digest,
            "input_shard": str(task.shard.resolve()),
            "input_size": record["input"]["size"],
            "input_sha256": record["input"]["sha256"],
            "versions": json.dumps(_versions()),
            "started_at": started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    return writer.output
