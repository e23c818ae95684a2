"""``tig-batch explain``: the main job, every method over whole datasets into HDF5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tig_batch.cli._common import UserError, progress_bar, quiet_option
from tig_batch.engine._search import OPTIMIZERS
from tig_batch.pipeline import METHODS, ExplainConfig

# the options' defaults are the library's: one place for each
_DEFAULTS = ExplainConfig()
_SEARCH = _DEFAULTS.search

if TYPE_CHECKING:
    from tig_batch.backends import SessionSettings
    from tig_batch.runner import RunOptions


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if not chosen:
        raise click.BadParameter(f"give at least one method; choose from {','.join(METHODS)}")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {','.join(METHODS)}")
    return chosen


def _target(ctx: click.Context, param: click.Parameter, value: str) -> str | int:
    if value in ("predicted", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("predicted, label, or a class index") from None


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the outputs: one HDF5 file per input shard.",
)
@click.option(
    "--methods",
    default=",".join(METHODS),
    show_default=True,
    callback=_methods,
    help="Comma-separated methods.",
)
@click.option(
    "--backend",
    type=click.Choice(["onnx", "torch"]),
    default="onnx",
    show_default=True,
    help="ONNX Runtime graphs from the bundle, or the torch reference.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Images explained and committed together (memory, progress and resume unit).",
)
@click.option(
    "--internal-batch-size",
    type=click.IntRange(1),
    default=_DEFAULTS.internal_batch_size,
    show_default=True,
    help="Samples (images x nodes) per model call.",
)
@click.option(
    "--method",
    "rule",
    type=click.Choice(["left", "right", "midpoint", "trapezoid", "gauss-legendre"]),
    default=_DEFAULTS.method,
    show_default=True,
    help="IG quadrature rule.",
)
@click.option(
    "--n-steps",
    type=click.IntRange(1),
    default=_DEFAULTS.n_steps,
    show_default=True,
    help="IG quadrature nodes for the attributions.",
)
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    callback=_target,
    help="predicted, label (from the shard), or a class index.",
)
@click.option(
    "--search-gradient",
    type=click.Choice(["frozen-path", "exact"]),
    default=_SEARCH.gradient,
    show_default=True,
    help="Gradient of mu in the base-point search (exact needs --backend torch).",
)
@click.option(
    "--search-optimizer",
    type=click.Choice(OPTIMIZERS),
    default=_SEARCH.optimizer,
    show_default=True,
    help="surrogate: each step maximises mu on the frozen-path model of IG under the value "
    "range and the --min-gap constraint, then moves --search-damping of the way. ascent: the "
    "paper's gradient ascent on mu. projection: closed-form steps to the tangential part of "
    "the explanation, blind to the gap (docs/method.md).",
)
@click.option(
    "--search-iterations",
    type=click.IntRange(0),
    default=_SEARCH.n_iterations,
    show_default=True,
    help="Steps of the base-point search.",
)
@click.option(
    "--search-lr",
    type=click.FloatRange(min=0),
    default=_SEARCH.lr,
    show_default=True,
    help="Ascent step length (l2, in pixel units).",
)
@click.option(
    "--search-adaptive-lr",
    is_flag=True,
    help="Per-image ascent step lengths: longer after a step that raised mu, shorter after one "
    "that lowered it.",
)
@click.option(
    "--search-damping",
    type=click.FloatRange(0, 1, min_open=True),
    default=_SEARCH.damping,
    show_default=True,
    help="surrogate and projection: the fraction of the way to the step's solution moved.",
)
@click.option(
    "--search-inner-iterations",
    type=click.IntRange(0),
    default=_SEARCH.inner_iterations,
    show_default=True,
    help="surrogate: ascent steps on the frozen-path problem per search step (no model calls).",
)
@click.option(
    "--search-anneal",
    type=click.FloatRange(0, 1),
    default=_SEARCH.anneal,
    show_default=True,
    help="surrogate: the share of the steps over which the gap aimed for falls from the zero "
    "base-point's to --min-gap (0: aim for --min-gap at once).",
)
@click.option(
    "--search-n-steps",
    type=click.IntRange(1),
    default=_SEARCH.n_steps,
    show_default=True,
    help="Quadrature nodes inside the search (the final IG uses --n-steps): the search only "
    "ranks base-points, so a coarse rule suffices (docs/method.md).",
)
@click.option(
    "--target-mu",
    type=click.FloatRange(0, 1),
    help="Stop an image's search once its mu reaches this.",
)
@click.option(
    "--min-gap",
    type=click.FloatRange(0, 1, max_open=True),
    default=_SEARCH.min_gap,
    show_default=True,
    help="The share of the zero base-point's output gap f_c(x) - f_c(0) that a tangential "
    "base-point must keep, so its explanation still accounts for the output. 0 is the paper's "
    "unconstrained problem: higher mu, but base-points next to the input and near-blank "
    "explanations.",
)
@click.option(
    "--seed",
    type=int,
    default=_DEFAULTS.seed,
    show_default=True,
    help="Seed of the random base-points and SmoothGrad.",
)
@click.option(
    "--gaussian-sigma",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.gaussian_sigma,
    show_default=True,
)
@click.option(
    "--blur-sigma",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.blur_sigma,
    show_default=True,
    help="In pixels.",
)
@click.option(
    "--smoothgrad-sigma",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.smoothgrad_sigma,
    show_default=True,
)
@click.option(
    "--smoothgrad-samples",
    type=click.IntRange(1),
    default=_DEFAULTS.smoothgrad_samples,
    show_default=True,
)
@click.option(
    "--on-bad-image",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Images with NaN/Inf pixels: stop, or flag and skip them.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage dtype of attributions and base-points.",
)
@click.option(
    "--compression", type=click.Choice(["gzip", "lzf", "none"]), default="gzip", show_default=True
)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch and ONNX Runtime.")
@click.option(
    "--graph-optimization",
    type=click.Choice(["disable", "basic", "extended", "all"]),
    default="all",
    show_default=True,
    help="ONNX Runtime graph optimisation level.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, or cuda[:N] (Triton kernels and the ONNX CUDA provider).",
)
@click.option(
    "--ids",
    metavar="IDS",
    help="Explain only the images with these ids: a comma list of ids and ranges, e.g. "
    "--ids 0-99,250,cat/001.png (ids are the inputs' stored ids, or an image's position in "
    "its dataset when none are stored, as in the outputs and the report).",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    help="Explain only the first N images of the inputs (after --ids).",
)
@click.option("--overwrite", is_flag=True, help="Replace outputs made with another configuration.")
@click.option(
    "--scheduler",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Shard by shard in this process, or one Dask task per shard (pip install "
    "'tig-batch[dask]').",
)
@click.option(
    "--dask-address",
    metavar="tcp://HOST:PORT",
    help="With --scheduler dask: a running Dask scheduler (workers must see the same paths).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="With --scheduler dask: start a local cluster of N worker processes instead "
    "(--threads then defaults to cores/N).",
)
@quiet_option
def explain(
    bundle: Path,
    inputs: tuple[str, ...],
    output_dir: Path,
    methods: tuple[str, ...],
    backend: str,
    batch_size: int,
    internal_batch_size: int,
    rule: str,
    n_steps: int,
    target: str | int,
    search_gradient: str,
    search_optimizer: str,
    search_iterations: int,
    search_lr: float,
    search_adaptive_lr: bool,
    search_damping: float,
    search_inner_iterations: int,
    search_anneal: float,
    search_n_steps: int,
    target_mu: float | None,
    min_gap: float,
    seed: int,
    gaussian_sigma: float,
    blur_sigma: float,
    smoothgrad_sigma: float,
    smoothgrad_samples: int,
    on_bad_image: str,
    dtype: str,
    compression: str,
    threads: int | None,
    graph_optimization: str,
    device: str,
    ids: str | None,
    limit: int | None,
    overwrite: bool,
    scheduler: str,
    dask_address: str | None,
    workers: int | None,
    quiet: bool,
) -> None:
    """Explain every image of INPUT... (shard files, directories or built-in names) with BUNDLE.

    Writes one HDF5 file per input shard into --output: attributions, alignment mu, IG
    convergence deltas and output gaps, the tangential base-points, targets, predictions,
    tangent ranks, chance levels and flags. Work is committed batch by batch: rerun the same
    command after a crash and it resumes where it stopped.

    --limit and --ids explain a subset: each output then holds its shard's selected images, in
    order; resume and the check against earlier outputs account for the selection.

    With --scheduler dask every shard is a task on a Dask cluster (--workers N starts one on
    this machine, --dask-address joins a running one); shards that fail are listed, the
    others are kept, and a rerun completes the rest.

    \b
    Example:
        tig-batch explain bundles/mnist mnist-5k -o explained --methods tangential,zero,gradient
        tig-batch explain bundles/mnist mnist-5k -o first100 --limit 100
        tig-batch explain bundles/mnist mnist-5k -o some --ids 0-9,309,549
        tig-batch explain bundles/mnist mnist-5k -o explained --scheduler dask --workers 4
    """
    import torch

    from tig_batch.backends import SessionSettings, load_bundle
    from tig_batch.data import resolve_dataset
    from tig_batch.engine import BaselineSearch
    from tig_batch.report import markdown_table, summarize
    from tig_batch.runner import RunOptions, Selection, explain_dataset, plan

    if scheduler == "local" and (dask_address or workers):
        raise click.UsageError("--dask-address and --workers go with --scheduler dask")
    if scheduler == "dask" and (dask_address is None) == (workers is None):
        raise click.UsageError("--scheduler dask needs --dask-address or --workers (one of them)")
    if scheduler == "dask" and workers and not threads:
        threads = max(1, (os.cpu_count() or 1) // workers)
    if search_optimizer != "ascent" and (search_gradient == "exact" or search_adaptive_lr):
        flag = "--search-gradient exact" if search_gradient == "exact" else "--search-adaptive-lr"
        raise click.UsageError(
            f"{flag} applies to ascent steps; add --search-optimizer ascent ({search_optimizer} "
            "steps use the frozen path gradient and no step length)"
        )
    if threads:
        torch.set_num_threads(threads)
    settings = SessionSettings(threads, graph_optimization, device)  # type: ignore[arg-type]
    sources = [
        resolve_dataset(name, "test").path if not Path(name).exists() else name for name in inputs
    ]
    search = BaselineSearch(
        gradient=search_gradient, optimizer=search_optimizer, lr=search_lr,  # type: ignore[arg-type]
        adaptive_lr=search_adaptive_lr, damping=search_damping, n_iterations=search_iterations,
        inner_iterations=search_inner_iterations, anneal=search_anneal, n_steps=search_n_steps,
        target_mu=target_mu, min_gap=min_gap, seed=seed,
    )  # fmt: skip
    config = ExplainConfig(
        methods=methods, n_steps=n_steps, method=rule, target=target, search=search, seed=seed,  # type: ignore[arg-type]
        gaussian_sigma=gaussian_sigma, blur_sigma=blur_sigma, smoothgrad_sigma=smoothgrad_sigma,
        smoothgrad_samples=smoothgrad_samples, internal_batch_size=internal_batch_size,
        on_bad_image=on_bad_image,  # type: ignore[arg-type]
    )  # fmt: skip
    options = RunOptions(
        batch_size, dtype, None if compression == "none" else compression, overwrite, device,
        Selection.parse(ids, limit),
    )  # fmt: skip
    total = sum(task.count for task in plan(sources, options.selection))
    if scheduler == "dask":
        outputs = _explain_with_dask(
            bundle, sources, output_dir, config, options, backend, settings,
            internal_batch_size, dask_address, workers, total, quiet,
        )  # fmt: skip
    else:
        loaded = load_bundle(bundle, backend, settings, internal_batch_size)  # type: ignore[arg-type]
        with progress_bar(total, "explain", quiet) as bar:
            outputs = explain_dataset(loaded, sources, output_dir, config, options, bar.update)
    click.echo(f"Wrote {len(outputs)} file(s) to {output_dir}.")
    if not quiet:
        click.echo(markdown_table(summarize(outputs)), err=True)


def _explain_with_dask(
    bundle: Path,
    sources: list,
    output_dir: Path,
    config: ExplainConfig,
    options: RunOptions,
    backend: str,
    settings: SessionSettings,
    internal_batch_size: int,
    address: str | None,
    workers: int | None,
    total: int,
    quiet: bool,
) -> list[Path]:
    """Run on Dask; failed shards are listed one per line on stderr before the error."""
    from tig_batch.distributed import ShardsFailedError, explain_dataset_dask

    try:
        with progress_bar(total, "explain", quiet) as bar:
            return explain_dataset_dask(
                bundle, sources, output_dir, config, options, backend=backend,  # type: ignore[arg-type]
                settings=settings, internal_batch_size=internal_batch_size, address=address,
                n_workers=workers, on_images=bar.update,
            )  # fmt: skip
    except ShardsFailedError as failed:
        debug = click.get_current_context().find_root().meta.get("tig_batch.debug")
        for failure in failed.failures:
            click.echo(f"failed: {failure.shard}: {failure.error}", err=True)
            if debug and failure.traceback:
                click.echo(failure.traceback, err=True)
        raise UserError(
            f"{len(failed.failures)} of {len(failed.failures) + len(failed.outputs)} shard(s) "
            f"failed; the {len(failed.outputs)} finished output(s) are kept in {output_dir}: "
            "rerun the same command to complete the rest"
        ) from None
