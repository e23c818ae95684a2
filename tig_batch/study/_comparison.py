"""The study's main comparison: every method on the test split, through ``tig-batch explain``'s
own path, summarised after each shard.

The test images are explained shard by shard by :func:`tig_batch.run` on the study's
:class:`~tig_batch.job.Job` (what ``tig-batch explain`` runs), one shard of its plan at a time,
resuming from the outputs an earlier run finished; after
each shard the table and figures are recomputed from the outputs finished so far, so a run
stopped part-way still has a (partial) result to show.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tig_batch.backends import BackendName, Runtime, load_bundle
from tig_batch.data import open_dataset
from tig_batch.job import Job, Plan, plan
from tig_batch.pipeline import METHODS
from tig_batch.report import (
    Scores,
    density_figure,
    examples_figure,
    faithfulness_figure,
    frontier_figure,
    load_examples,
    read_scores,
    select_examples,
    summarize_scores,
)
from tig_batch.runner import run
from tig_batch.study._build import first_images
from tig_batch.study._rescore import blur_rescore
from tig_batch.study._settings import Log, Settings, Splits, bundle_path, digest


@dataclass(frozen=True)
class Row:
    """One method's statistics of ``mu`` (over finite values) and its output gap: the
    :class:`~tig_batch.report.MethodSummary` with quartiles in place of p10/p90."""

    method: str
    count: int
    mean: float
    q25: float
    median: float
    q75: float
    above_chance: float
    mean_gap: float | None
    gap_fraction: float | None  # mean gap over the zero base-point's
    flagged: int
    mean_abs_delta: float | None = None  # completeness error (methods with a gap)
    metrics: dict[str, float] = field(default_factory=dict)  # faithfulness metric -> mean


def rows_from_scores(scores: Scores, rename: dict[str, str] | None = None) -> list[Row]:
    """Per method: mean, quartiles and share above chance of ``mu``; the mean output gap."""
    rows = []
    for summary in summarize_scores(scores):
        mu = scores.alignment[summary.method]
        finite = mu[np.isfinite(mu)]
        q25, q75 = (float(q) for q in np.percentile(finite, [25, 75])) if finite.size else (
            float("nan"), float("nan"))  # fmt: skip
        rows.append(
            Row(
                (rename or {}).get(summary.method, summary.method), summary.count,
                summary.mean, q25, summary.median, q75, summary.above_chance,
                summary.mean_output_gap, summary.mean_gap_fraction, summary.flagged,
                summary.mean_abs_delta, summary.metrics,
            )
        )  # fmt: skip
    return rows


PAPER_MODE = "tangential, paper mode"  # the row of the tangential method with min_gap 0


@dataclass(frozen=True)
class Comparison:
    """The main comparison over the explain outputs finished so far.

    ``n_total``: test images once every shard is done; ``explain_seconds``: compute time
    summed over the finished shards, each timed by the invocation that explained it.
    ``paper_mode``: the tangential method without the gap constraint, once its first shard
    is done.
    """

    rows: list[Row]
    chance: float
    n_images: int
    n_total: int
    explain_seconds: float
    figures: dict[str, Path]  # "density", "frontier", "faithfulness", "examples"
    notes: list[str]  # what the examples could not show, e.g. an input shard that is gone
    paper_mode: Row | None = None
    paper_images: int = 0


def explain_key(settings: Settings, inputs: str, backend: str, references: str = "") -> str:
    """The cache key of the main comparison's explanations (its directory is
    ``explained-<key>``): everything that determines them, so a rerun resumes them
    (``references``: what Expected Gradients draws its base-points from)."""
    return digest([settings.explain, settings.storage, inputs, backend, references])


def paper_key(settings: Settings, inputs: str, backend: str) -> str:
    """The cache key of the paper-mode run (directory ``paper-mode-<key>``)."""
    return digest([settings.paper_config, settings.storage, inputs, backend])


def summarize_outputs(
    outputs: list[Path], figures: Path, seconds: dict[str, float], n_examples: int,
    n_total: int, paper: list[Path] = (), min_gap: float | None = None,
    replacement: str | None = None, rescored: dict[str, dict[str, float]] | None = None,
) -> Comparison:  # fmt: skip
    """The table, density, frontier, faithfulness scatter (deletion with ``replacement``)
    and examples of the explain ``outputs`` finished so far, with the paper-mode row of the
    ``paper`` outputs finished so far; ``rescored`` (method -> column -> mean) joins the
    rows' metrics."""
    scores = read_scores(outputs)
    paper_scores = read_scores(paper) if paper else None
    examples, notes = load_examples(select_examples(outputs, None, n_examples))
    figures_written = {
        "density": density_figure(scores, figures),
        "frontier": frontier_figure(scores, figures, min_gap, paper_scores),
        "faithfulness": faithfulness_figure(scores, figures, replacement),
        "examples": examples_figure(examples, figures),
    }
    rows = [
        dataclasses.replace(r, metrics={**r.metrics, **(rescored or {}).get(r.method, {})})
        for r in rows_from_scores(scores)
    ]
    return Comparison(
        rows=rows,
        chance=scores.chance_level,
        n_images=scores.n_images,
        n_total=n_total,
        explain_seconds=sum(seconds[p.name] for p in outputs),
        figures={k: v for k, v in figures_written.items() if v is not None},
        notes=notes,
        paper_mode=(
            rows_from_scores(paper_scores, {"tangential": PAPER_MODE})[0] if paper_scores else None
        ),
        paper_images=paper_scores.n_images if paper_scores else 0,
    )


def compare_methods(
    models: Path, splits: Splits, settings: Settings, backend: BackendName, threads: int | None,
    figures: Path, log: Log, quiet: bool = False, cached_only: bool = False,
) -> Iterator[Comparison]:  # fmt: skip
    """Explain the first ``settings.n_images`` of the test split with every method (Expected
    Gradients drawing its base-points from the training split), shard by shard (resuming from
    finished outputs in ``models``), then the tangential method in paper mode; yield the
    comparison after each shard.

    With ``cached_only`` it stops at the first shard not yet finished, computing nothing.
    """
    count = open_dataset(splits.test).count
    n_images = min(settings.n_images or count, count)
    directory = models / f"test-first{n_images}-by{settings.shard_size}"
    inputs = first_images(splits.test, n_images, directory, settings.shard_size)
    main = dataclasses.replace(settings.explain, methods=METHODS)
    train = str(splits.train)
    runs = [
        (f"explained-{explain_key(settings, inputs.name, backend, train)}", main, "explain",
         splits.train),
        (f"paper-mode-{paper_key(settings, inputs.name, backend)}", settings.paper_config,
         "explain, paper mode", None),
    ]  # fmt: skip
    done: list[list[Path]] = [[], []]
    seconds: dict[str, float] = {}
    min_gap = settings.explain.search.min_gap if settings.explain.search.gap_relative else None
    runtime = Runtime(backend, threads=threads)
    bundle = bundle_path(models, settings.training.latent_dim)
    replacement = settings.explain.metrics.deletion_replacement
    rescored = None
    for index, (directory, config, label, references) in enumerate(runs):
        job = Job(
            bundle, (inputs,), models / directory, config, runtime, settings.storage,
            references=references,
        )  # fmt: skip
        planned = plan(job)
        n_total = planned.n_images
        log(f"{label}: {n_total} test images, {len(config.methods)} method(s) -> {job.output}")
        for output, timing in _explain_shards(planned, label, quiet, cached_only):
            done[index].append(output)
            if index == 0:
                seconds.update(timing)
                if len(done[0]) == len(planned.tasks):
                    rescored = _rescore(done[0], settings, bundle, runtime, log, cached_only)
            yield summarize_outputs(
                done[0], figures, seconds, settings.n_examples, n_total, done[1], min_gap,
                replacement, rescored,
            )  # fmt: skip
        if len(done[index]) < len(planned.tasks):  # stopped early (cached_only): no more
            return


def _rescore(
    outputs: list[Path], settings: Settings, bundle: Path, runtime: Runtime, log: Log,
    cached_only: bool,
) -> dict[str, dict[str, float]] | None:  # fmt: skip
    """Deletion and insertion of the finished main outputs with the blurred image as the
    replacement, when explain scored them with the zero base-point's
    (:func:`~tig_batch.study._rescore.blur_rescore`)."""
    metrics, explain = settings.explain.metrics, settings.explain
    if metrics.deletion_replacement != "zero" or "deletion" not in metrics.names:
        return None
    log("rescoring deletion and insertion with the blurred image as the replacement")
    classifier = load_bundle(bundle, runtime).classifier
    return blur_rescore(
        classifier, outputs, metrics.deletion_steps, explain.blur_sigma, explain.value_range,
        cached_only=cached_only,
    )  # fmt: skip


def _explain_shards(
    planned: Plan, label: str, quiet: bool, cached_only: bool
) -> Iterator[tuple[Path, dict[str, float]]]:
    """Each task's output, explaining the ones not finished yet; with the compute seconds of
    every finished output so far (``seconds.json`` beside them)."""
    explained = planned.job.output
    timing = explained / "seconds.json"  # compute seconds per finished output
    seconds = json.loads(timing.read_text()) if timing.is_file() else {}
    with tqdm(total=planned.n_images, desc=label, unit="img", disable=quiet,
              file=sys.stderr) as bar:  # fmt: skip
        for task in planned.tasks:
            output = explained / task.output_name
            if not (output.is_file() and task.output_name in seconds):
                if cached_only:
                    return
                start = time.perf_counter()
                run(planned.only(task), on_images=bar.update)
                seconds[task.output_name] = time.perf_counter() - start
                timing.write_text(json.dumps(seconds))
            else:
                bar.update(task.count)
            yield output, seconds
