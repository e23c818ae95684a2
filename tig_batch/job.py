"""One run as one object: a :class:`Job`, planned once into shard tasks.

A Job says what to explain (``bundle``, ``inputs``, ``selection``), what the explanations are
(:class:`~tig_batch.pipeline.ExplainConfig`), how they are computed
(:class:`~tig_batch.backends.Runtime`) and how they are written (:class:`Storage`), and where
(``output``). It is frozen and picklable: the command line, Dask, the quickstart and the paper
study all build one and hand it to :func:`tig_batch.run`.

:func:`plan` reads the bundle's manifest and every input once, checks each shard against the
bundle and the configuration, and returns a :class:`Plan`: the shard tasks, and the record
every output carries of the job that made it. Resume and ``--overwrite`` compare that record,
so a setting that changes the explanations can never be resumed into an output made without
it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from tig_batch._bundle import Manifest, manifest_digest, read_manifest, sha256
from tig_batch._references import ReferenceData, References, load_references
from tig_batch._selection import Selection, rows_digest, selected_rows
from tig_batch.backends import Runtime
from tig_batch.data import DatasetInfo, open_dataset, resolve_dataset
from tig_batch.errors import DataError
from tig_batch.pipeline import ExplainConfig

StorageDtype = Literal["float32", "float16"]
Compression = Literal["gzip", "lzf"]


@dataclass(frozen=True)
class Storage:
    """How outputs are written.

    ``batch_size`` images are explained and committed together: the unit of memory, of
    progress and of crash recovery. ``dtype`` stores attributions and base-points (scores are
    always float32); ``compression`` is HDF5's (None: none). ``overwrite`` replaces outputs
    of another job instead of refusing them.
    """

    batch_size: int = 64
    dtype: StorageDtype = "float32"
    compression: Compression | None = "gzip"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in get_args(StorageDtype):
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype!r}")
        if self.compression is not None and self.compression not in get_args(Compression):
            raise ValueError(f"compression must be gzip, lzf or None, got {self.compression!r}")


@dataclass(frozen=True)
class Job:
    """Everything one run needs. ``inputs`` are shard files, directories of shards, or
    built-in dataset names (their test split); ``output`` is the directory that receives one
    HDF5 file per input shard. ``references`` (a :class:`ReferenceData`, or its source: a
    dataset, a built-in name meaning its train split) are the images Expected Gradients draws
    its base-points from; ``expectedgrad`` needs them and no other method reads them."""

    bundle: Path
    inputs: tuple[str | Path, ...]
    output: Path
    config: ExplainConfig = field(default_factory=ExplainConfig)
    runtime: Runtime = field(default_factory=Runtime)
    storage: Storage = field(default_factory=Storage)
    selection: Selection = field(default_factory=Selection)
    references: ReferenceData | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        object.__setattr__(self, "output", Path(self.output))
        if isinstance(self.inputs, str | Path):
            object.__setattr__(self, "inputs", (self.inputs,))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if isinstance(self.references, str | Path):
            object.__setattr__(self, "references", ReferenceData(self.references))
        if not self.inputs:
            raise ValueError("a job needs at least one input")
        if "expectedgrad" in self.config.methods and self.references is None:
            raise ValueError(
                "expectedgrad draws its base-points from reference images: give "
                "--reference-data DATASET (e.g. the training shard, or mnist-5k for its train "
                "split)"
            )


@dataclass(frozen=True)
class ShardTask:
    """One input shard to explain: its dataset, the dataset position of its first image (the
    seed key) and, when not every image is explained, the ``rows`` of the shard that are."""

    shard: Path
    count: int
    first_id: int
    dataset: DatasetInfo
    rows: np.ndarray | None = None

    @property
    def output_name(self) -> str:
        return self.shard.name


@dataclass(frozen=True)
class Plan:
    """A validated :class:`Job` and its shard tasks, in order.

    ``job.config`` carries the bundle's value range; ``bundle_digest`` is the sha256 of the
    bundle's manifest, which pins every file of it (workers check they see the same bundle).
    ``references``: Expected Gradients' reference images, read once here (a scheduler ships
    them to its workers), when ``expectedgrad`` runs.
    """

    job: Job
    bundle_digest: str
    tasks: tuple[ShardTask, ...]
    references: References | None = None

    @property
    def n_images(self) -> int:
        return sum(task.count for task in self.tasks)

    def only(self, task: ShardTask) -> Plan:
        """This plan with one of its tasks: what a scheduler runs for that shard alone."""
        return dataclasses.replace(self, tasks=(task,))


def plan(job: Job) -> Plan:
    """Open the bundle's manifest (checking its checksums) and every input once, pick the
    selected images shard by shard, check every shard against the bundle and the
    configuration, and read the reference images (when Expected Gradients runs), so bad data
    or options fail before any work starts."""
    manifest = read_manifest(job.bundle)
    config = dataclasses.replace(job.config, value_range=tuple(manifest.input.value_range))
    job = dataclasses.replace(job, config=config)
    tasks = _tasks(job.inputs, job.selection)
    for task in tasks:
        check_compatible(manifest, job, task.dataset)
    references = None
    if job.references is not None and "expectedgrad" in config.methods:
        spec = manifest.input
        references = load_references(job.references, tuple(spec.shape), tuple(spec.value_range))
    return Plan(job, manifest_digest(job.bundle), tuple(tasks), references)


def _open(source: str | Path) -> DatasetInfo:
    """A path to shards, else a built-in dataset's test split."""
    return open_dataset(source) if Path(source).exists() else resolve_dataset(source, "test")


def _tasks(inputs: tuple[str | Path, ...], selection: Selection) -> list[ShardTask]:
    """Every shard with images ``selection`` picks, in order, numbered from its dataset
    position; shards whose output names would clash are refused."""
    tasks: list[ShardTask] = []
    left = selection.limit
    for source in inputs:
        dataset = _open(source)
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


def check_compatible(manifest: Manifest, job: Job, dataset: DatasetInfo) -> None:
    """Refuse data the bundle's models were not made for, a target the classifier has no
    output for, or labels the data does not have; naming the file and the mismatch."""
    expected = manifest.input
    if tuple(dataset.shape) != tuple(expected.shape):
        raise DataError(
            f"{dataset.path}: images are {tuple(dataset.shape)} but the bundle "
            f"{job.bundle} expects {tuple(expected.shape)}"
        )
    if tuple(dataset.value_range) != tuple(expected.value_range):
        raise DataError(
            f"{dataset.path}: value range {tuple(dataset.value_range)} differs from the "
            f"bundle's {tuple(expected.value_range)}"
        )
    _check_target(job.config, manifest.n_classes, dataset)


def _check_target(config: ExplainConfig, n_classes: int, dataset: DatasetInfo) -> None:
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


def job_record(plan: Plan, task: ShardTask) -> dict[str, Any]:
    """Everything that determines ``task``'s output: what the output records as its job and
    what a resume must match exactly. Reads the shard once, for its sha256."""
    job = plan.job
    record = {
        "config": dataclasses.asdict(job.config),
        "bundle_manifest_sha256": plan.bundle_digest,
        "backend": job.runtime.backend,
        "input": {
            "name": task.shard.name,
            "size": task.shard.stat().st_size,
            "sha256": sha256(task.shard),
            "first_id": task.first_id,
            **_rows_record(task),
        },
        "batch_size": job.storage.batch_size,
        "dtype": job.storage.dtype,
        "compression": job.storage.compression,
    }
    if plan.references is not None:
        record["references"] = plan.references.record
    return json.loads(json.dumps(record, sort_keys=True))


def _rows_record(task: ShardTask) -> dict[str, Any]:
    """A selection's part of the record (nothing when every image is explained)."""
    if task.rows is None:
        return {}
    return {"rows": {"count": len(task.rows), "sha256": rows_digest(task.rows)}}
