"""Reproduce the paper's comparison and its open questions; write docs/results.md.

Simpson et al. (arXiv 2503.08240) report that tangentially aligned IG reaches a mean alignment
``mu > 0.91`` with the data manifold, above every common base-point and every gradient
explainer. This script measures that claim on ``mu`` *and* the output gap (method.md: alignment
bought by collapsing the gap explains nothing), with the library's own path end to end:

1. data: the built-in ``mnist-5k`` (or ``--data TRAIN --test-data TEST`` shards);
2. models: trains the classifier and the autoencoder, or reuses them from ``--work-dir``
   (cached by a hash of the data and the training settings, so a second run never retrains);
3. bundle: exports both to ONNX (``tig_batch.export.export_checkpoints``), also cached;
4. explain: every method on the test split through ``tig_batch.run`` on a ``Job``, the code
   behind ``tig-batch explain`` (resumable: a rerun keeps finished outputs);
5. ablations (each one flag away, on the first ``--ablation-images`` test images, results
   cached per variant): Gaussian ``sigma``, tangent dimension ``n``, the optimiser's learning
   rate x iterations, fixed steps vs stopping at a target ``mu``, the optimisers with and
   without the gap constraint, the gap constraint's ``min_gap``;
6. writes ``docs/results.md`` with figures in ``docs/results/``.

The study itself lives in ``tig_batch/study/``: its settings in ``_settings.py``, training
and export (shared with the quickstart) in ``_build.py``, the main comparison in
``_comparison.py``, the ablations in ``_ablations.py``, the page in ``_page.py``. This file is
its command line and the order of its steps.

    python scripts/reproduce_paper.py --threads 2                   # the main table
    python scripts/reproduce_paper.py --threads 2 --all-ablations   # and every ablation
    python scripts/reproduce_paper.py --quick --out /tmp/r/results.md  # a smoke run
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch

from tig_batch.cli._common import CONTEXT_SETTINGS, UserError
from tig_batch.data import cache_dir, open_dataset
from tig_batch.errors import DataError, ModelError, TigBatchError
from tig_batch.study import (
    FULL,
    LATENTS,
    MIN_GAPS,
    QUICK,
    SEARCH_ITERATIONS,
    SEARCH_LRS,
    SIGMAS,
    TARGET_MUS,
    Ablation,
    Log,
    Settings,
    StudyReport,
    adaptive_ablation,
    compare_methods,
    cost_figure,
    ensure_models,
    latent_ablation,
    min_gap_ablation,
    optimizer_ablation,
    read_images,
    render,
    resolve_splits,
    run_ablation,
    search_ablation,
    sigma_ablation,
)

REPO = Path(__file__).resolve().parent.parent
COSTED = ("adaptive", "search", "optimizer", "min_gap")  # ablations in the cost figure


def float_list(positive: bool = True, at_most: float | None = None) -> Callable:
    """A Click callback parsing ``0.1,0.5`` into a tuple of numbers (> 0 when ``positive``)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            values = tuple(float(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a comma-separated list of numbers"
            ) from None
        bad = [v for v in values if not np.isfinite(v) or (positive and v <= 0)
               or (at_most is not None and v > at_most)]  # fmt: skip
        if not values or bad:
            limit = f" and at most {at_most:g}" if at_most is not None else ""
            raise click.BadParameter(f"values must be numbers > 0{limit}; got {value!r}")
        return values

    return parse


def int_list(ctx: click.Context, param: click.Parameter, value: str | None):
    """A Click callback parsing ``8,16`` into a tuple of integers >= 1."""
    if value is None:
        return None
    try:
        values = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"values must be integers >= 1; got {value!r}")
    return values


def invoked_command(ctx: click.Context) -> str:
    """The command line that gives this run: the script and every option given to it."""
    parts = ["python", "scripts/reproduce_paper.py"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        if isinstance(param, click.Option) and param.is_flag:
            parts.append(flag)
        else:
            raw = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) \
                if isinstance(value, tuple) else str(value)  # fmt: skip
            parts += [flag, raw]
    return shlex.join(parts)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--data",
    default="mnist-5k",
    show_default=True,
    metavar="DATASET",
    help="A built-in dataset, or training shards (file or directory).",
)
@click.option("--test-data", metavar="PATH", help="Test shards when --data is a path.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO / "docs" / "results.md",
    show_default="docs/results.md",
    help="The Markdown page; figures go to a folder named like it beside it.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Models, bundles, explanations, ablation results [default: $TIG_BATCH_CACHE/reproduce].",
)
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch and ONNX Runtime.")
@click.option("--n-images", type=click.IntRange(1), help="Explain only the first N test images.")
@click.option(
    "--ablation-images",
    type=click.IntRange(1),
    help="Test images per ablation [default: 200; --quick: 6].",
)
@click.option(
    "--ablate-sigma",
    callback=float_list(),
    metavar="S1,S2,...",
    help="Gaussian base-point sigmas, e.g. 0.1,0.25,0.5,1.0.",
)
@click.option(
    "--ablate-latent",
    callback=int_list,
    metavar="N1,N2,...",
    help="Latent sizes n (one autoencoder each), e.g. 8,16,32,64.",
)
@click.option("--ablate-search", is_flag=True, help="Learning rate x iterations grid.")
@click.option(
    "--search-lrs",
    callback=float_list(),
    metavar="LR1,...",
    help=f"The grid's learning rates [default: {','.join(map(str, SEARCH_LRS))}].",
)
@click.option(
    "--search-iterations",
    callback=int_list,
    metavar="K1,...",
    help=f"The grid's iterations [default: {','.join(map(str, SEARCH_ITERATIONS))}].",
)
@click.option(
    "--ablate-adaptive", is_flag=True, help="Fixed vs adaptive steps (target mu, step size)."
)
@click.option(
    "--ablate-optimizer", is_flag=True,
    help="Ascent, projection and surrogate optimisers, with and without the gap constraint.",
)  # fmt: skip
@click.option(
    "--ablate-min-gap", is_flag=True,
    help=f"The default search at min_gap {','.join(map(str, MIN_GAPS))}: the frontier.",
)  # fmt: skip
@click.option(
    "--target-mus",
    callback=float_list(at_most=1.0),
    metavar="MU1,...",
    help=f"Targets for --ablate-adaptive [default: {','.join(map(str, TARGET_MUS))}].",
)
@click.option("--all-ablations", is_flag=True, help="Run every ablation with its default grid.")
@click.option(
    "--cached-only",
    is_flag=True,
    help="Compute nothing: write the page from what earlier runs finished.",
)
@click.option(
    "--skip-main",
    is_flag=True,
    help="Only the ablations: leave the main comparison out of this run's page.",
)
@click.option("--quick", is_flag=True, help="Tiny settings: a smoke test, numbers mean nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def main(ctx: click.Context, **opts) -> None:
    """Train or reuse the models, explain the test split with every method, run the
    ablations asked for, and write the results page with its figures.

    \b
    Example:
        python scripts/reproduce_paper.py --threads 2 --all-ablations
    """
    try:
        command = invoked_command(ctx).replace(" --cached-only", "")
        run(opts, command)
    except TigBatchError as error:
        raise UserError(" ".join(str(error).split("\n"))) from None


def requested_ablations(opts: dict, settings: Settings) -> list[Ablation]:
    """The ablations the flags ask for, cheapest first (the latent one trains autoencoders)."""
    every = opts["all_ablations"]
    search = settings.ablation_search
    sigmas = opts["ablate_sigma"] or (SIGMAS if every else None)
    latents = opts["ablate_latent"] or (LATENTS if every else None)
    found = []
    if sigmas:
        found.append(sigma_ablation(sigmas))
    if opts["ablate_adaptive"] or every:
        found.append(adaptive_ablation(search, opts["target_mus"] or TARGET_MUS))
    if opts["ablate_optimizer"] or every:
        found.append(optimizer_ablation(search))
    if opts["ablate_min_gap"] or every:
        found.append(min_gap_ablation(MIN_GAPS))
    if opts["ablate_search"] or every:
        lrs = opts["search_lrs"] or SEARCH_LRS
        found.append(search_ablation(search, lrs, opts["search_iterations"] or SEARCH_ITERATIONS))
    if latents:
        found.append(latent_ablation(latents, search))
    return found


def run(opts: dict, command: str) -> None:
    """Models, then the main comparison, then each ablation; the page is rewritten after each
    step, so an interrupted run leaves the results of every finished step."""
    settings = QUICK if opts["quick"] else FULL
    settings = dataclasses.replace(
        settings,
        n_images=opts["n_images"] or settings.n_images,
        ablation_images=opts["ablation_images"] or settings.ablation_images,
    )
    quiet, threads, cached_only = opts["quiet"], opts["threads"], opts["cached_only"]
    say: Log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    if threads:
        torch.set_num_threads(threads)
    ablations = requested_ablations(opts, settings)
    splits = resolve_splits(opts["data"], opts["test_data"])
    work, out = opts["work_dir"] or cache_dir() / "reproduce", opts["out"]
    figures = out.parent / out.stem
    for directory in (work, figures):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"{directory}: cannot create it ({error.strerror})") from None
    report = StudyReport(command, splits, settings, opts["backend"], threads)
    report.cached_only = cached_only
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        report.seconds[step] = time.perf_counter() - clock
        clock = time.perf_counter()
        out.write_text(render(report, out))

    report.models = ensure_models(
        work, splits, settings, [settings.training.latent_dim], threads, say, cached_only
    )
    models = report.models.directory
    lap("models")
    if not opts["skip_main"]:
        for comparison in compare_methods(
            models, splits, settings, report.backend, threads, figures, say, quiet,
            cached_only,
        ):  # fmt: skip
            report.add_comparison(comparison)
            out.write_text(render(report, out))
        lap("explain and figures")
        say(f"wrote {out}")
    if ablations:
        info = open_dataset(splits.test)
        data = read_images(info, min(settings.ablation_images, info.count))
        report.ablation_images = len(data["ids"])
    for ablation in ablations:
        latents = [v.latent for v in ablation.variants if v.latent is not None]
        for n in latents:  # one autoencoder per n (--cached-only: those already trained)
            try:
                more = ensure_models(work, splits, settings, [n], threads, say, cached_only)
            except ModelError:
                if not cached_only:
                    raise
                continue
            report.models.metrics.update(more.metrics)
        results = run_ablation(
            ablation, data, models, settings, report.backend, threads, quiet, cached_only
        )
        report.ablations.append((ablation, results))
        if any(a.name in COSTED for a, _ in report.ablations):
            report.figures["ablations"] = cost_figure(report.ablations, figures)
        lap(f"ablation {ablation.name}")
        say(f"wrote {out} ({ablation.name})")


if __name__ == "__main__":
    main()
