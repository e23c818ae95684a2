"""``tig-batch explain``: the main job, every method over whole datasets into HDF5."""

from __future__ import annotations

from pathlib import Path

import click

from tig_batch.cli._common import progress_bar, quiet_option
from tig_batch.pipeline import METHODS


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown {', '.join(unknown) or 'empty list'}; choose from {','.join(METHODS)}"
        )
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
    default=512,
    show_default=True,
    help="Samples (images x nodes) per model call.",
)
@click.option(
    "--method",
    "rule",
    type=click.Choice(["left", "right", "midpoint", "trapezoid", "gauss-legendre"]),
    default="midpoint",
    show_default=True,
    help="IG quadrature rule.",
)
@click.option(
    "--n-steps",
    type=click.IntRange(1),
    default=50,
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
    default="frozen-path",
    show_default=True,
    help="Gradient of mu in the base-point search (exact needs --backend torch).",
)
@click.option(
    "--search-iterations",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="Ascent steps of the base-point search.",
)
@click.option(
    "--search-lr",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Step length (l2, in pixel units) of the search.",
)
@click.option(
    "--search-n-steps",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Quadrature nodes inside the search.",
)
@click.option(
    "--target-mu",
    type=click.FloatRange(0, 1),
    help="Stop an image's search once its mu reaches this.",
)
@click.option(
    "--min-gap",
    type=float,
    help="Never keep a base-point whose output gap is below this fraction of the zero "
    "base-point's.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random base-points and SmoothGrad.",
)
@click.option("--gaussian-sigma", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option(
    "--blur-sigma", type=click.FloatRange(min=0), default=4.0, show_default=True, help="In pixels."
)
@click.option("--smoothgrad-sigma", type=click.FloatRange(min=0), default=0.02, show_default=True)
@click.option("--smoothgrad-samples", type=click.IntRange(1), default=25, show_default=True)
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
@click.option("--overwrite", is_flag=True, help="Replace outputs made with another configuration.")
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
    search_iterations: int,
    search_lr: float,
    search_n_steps: int,
    target_mu: float | None,
    min_gap: float | None,
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
    overwrite: bool,
    quiet: bool,
) -> None:
    """Explain every image of INPUT... (shard files, directories or built-in names) with BUNDLE.

    Writes one HDF5 file per input shard into --output: attributions, alignment mu, IG
    convergence deltas and output gaps, the tangential base-points, targets, predictions,
    tangent ranks, chance levels and flags. Work is committed batch by batch: rerun the same
    command after a crash and it resumes where it stopped.

    \b
    Example:
        tig-batch explain bundles/mnist mnist-5k -o explained --methods tangential,zero,gradient
    """
    import torch

    from tig_batch.backends import SessionSettings, load_bundle
    from tig_batch.data import resolve_dataset
    from tig_batch.engine import BaselineSearch
    from tig_batch.pipeline import ExplainConfig
    from tig_batch.report import markdown_table, summarize
    from tig_batch.runner import RunOptions, explain_dataset, plan

    if threads:
        torch.set_num_threads(threads)
    settings = SessionSettings(threads, graph_optimization, device)  # type: ignore[arg-type]
    loaded = load_bundle(bundle, backend, settings, internal_batch_size)  # type: ignore[arg-type]
    sources = [
        resolve_dataset(name, "test").path if not Path(name).exists() else name for name in inputs
    ]
    search = BaselineSearch(
        gradient=search_gradient, lr=search_lr, n_iterations=search_iterations,  # type: ignore[arg-type]
        n_steps=search_n_steps, target_mu=target_mu, min_gap=min_gap, seed=seed,
    )  # fmt: skip
    config = ExplainConfig(
        methods=methods, n_steps=n_steps, method=rule, target=target, search=search, seed=seed,  # type: ignore[arg-type]
        gaussian_sigma=gaussian_sigma, blur_sigma=blur_sigma, smoothgrad_sigma=smoothgrad_sigma,
        smoothgrad_samples=smoothgrad_samples, internal_batch_size=internal_batch_size,
        on_bad_image=on_bad_image,  # type: ignore[arg-type]
    )  # fmt: skip
    options = RunOptions(
        batch_size, dtype, None if compression == "none" else compression, overwrite, device
    )
    total = sum(task.count for task in plan(sources))
    with progress_bar(total, "explain", quiet) as bar:
        outputs = explain_dataset(loaded, sources, output_dir, config, options, bar.update)
    click.echo(f"Wrote {len(outputs)} file(s) to {output_dir}.")
    if not quiet:
        click.echo(markdown_table(summarize(outputs)), err=True)
