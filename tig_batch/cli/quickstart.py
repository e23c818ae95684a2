"""``tig-batch quickstart``: the whole job on the built-in digits, in one command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from tig_batch.cli._common import log_to_stderr, progress_bar, quiet_option
from tig_batch.report import FLAGS_EXPLAINED, MethodSummary, flagged_text


@click.command()
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
    default="tig-batch-quickstart", show_default=True,
    help="Directory for the explanations (explained/) and the report (report/).",
)  # fmt: skip
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where trained models, the bundle and the input subset are kept and reused "
    "[default: $TIG_BATCH_CACHE/quickstart or ~/.cache/tig-batch/quickstart].",
)  # fmt: skip
@click.option(
    "--fast", is_flag=True,
    help="A smoke run: a few training steps, 12 images, a short search (about a minute on 2 "
    "CPU cores, README.md).",
)  # fmt: skip
@click.option(
    "--n-images", type=click.IntRange(1),
    help="Explain only the first N test images [default: all 1,000; 12 with --fast].",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Recompute explanations already in --out.")
@quiet_option
def quickstart(
    out_dir: Path, cache_dir: Path | None, fast: bool, n_images: int | None, overwrite: bool,
    quiet: bool,
) -> None:  # fmt: skip
    """Run the whole job on the built-in mnist-5k digits: train, export, explain, report.

    Builds the mnist-5k shards, trains the classifier (10 epochs) and the autoencoder (20
    epochs, n = 16) or reuses them from --cache-dir, exports and verifies the ONNX bundle,
    explains the 1,000 test digits with the paper's nine methods (IG n_steps 16; the
    tangential base-point search of `tig-batch explain`, keeping half of the zero
    base-point's output gap; SmoothGrad 5 samples), scores them with explain's default
    faithfulness metrics and writes the report. Minutes on 2 CPU cores the first time
    (docs/quickstart.md has the measured time), seconds when everything is cached.

    \b
    Example:
        tig-batch quickstart --out quickstart
    """
    from tig_batch.quickstart import DEFAULT, FAST, default_cache_dir, run_quickstart
    from tig_batch.report import summarize

    settings = FAST if fast else DEFAULT
    if n_images is not None:
        settings = dataclasses.replace(settings, n_images=n_images)
    cache = cache_dir or default_cache_dir()
    result = run_quickstart(
        out_dir, cache, settings, overwrite=overwrite, log=log_to_stderr(quiet),
        progress=None if quiet else (lambda total, desc: progress_bar(total, desc, quiet)),
    )  # fmt: skip
    summaries = summarize(result.outputs)
    short = [_summary_line(s) for s in summaries]
    metrics = result.metrics
    lines = [
        f"Classifier: {result.checkpoints['classifier']} (test accuracy "
        f"{metrics.get('test_accuracy', float('nan')):.3f})",
        f"Autoencoder: {result.checkpoints['autoencoder']} (test MSE "
        f"{metrics.get('test_mse', float('nan')):.4f})",
        f"Bundle: {result.bundle}",
        f"Explanations: {result.explained}/",
        f"Report: {result.report}",
        "",
        *short,
    ]
    if any(s.flagged for s in summaries):
        lines += ["", FLAGS_EXPLAINED[0].upper() + FLAGS_EXPLAINED[1:]]
    if result.reused:
        lines.insert(0, f"Reused from {cache}: {', '.join(result.reused)}.")
    click.echo("\n".join(lines))
    if not quiet:
        timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
        click.echo(f"Took {timing}. Full table: {result.report.parent / 'summary.md'}", err=True)


def _summary_line(s: MethodSummary) -> str:
    """One method's mean mu, share above chance, gap kept (IG), deletion AUC (when scored)
    and flagged count, in aligned columns."""
    gap = "" if s.mean_gap_fraction is None else f"gap {100 * s.mean_gap_fraction:3.0f}% of zero's"
    line = (
        f"  {s.method:<11} mean mu {s.mean:.2f}   above chance {100 * s.above_chance:3.0f}%"
        f"   {gap:<18}"
    )
    if "deletion" in s.metrics:
        line += f"   deletion {s.metrics['deletion']:.2f}"
    return f"{line}   flagged {flagged_text(s)}"
