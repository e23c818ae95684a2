"""``tig-batch explain``: the main job, every method over whole datasets into HDF5.

A thin layer: the option groups (``_job_options``) build the Job's parts, and the command
plans the job, runs it with the chosen scheduler and shows progress and a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tig_batch.cli._common import UserError, progress_bar, quiet_option
from tig_batch.cli._config_options import config_options
from tig_batch.cli._job_options import (
    reference_options,
    runtime_options,
    scheduler_options,
    selection_options,
    storage_options,
)

if TYPE_CHECKING:
    from tig_batch._references import ReferenceData
    from tig_batch._selection import Selection
    from tig_batch.backends import Runtime
    from tig_batch.job import Plan, Storage
    from tig_batch.pipeline import ExplainConfig
    from tig_batch.runner import Scheduler


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
@config_options
@runtime_options
@storage_options
@selection_options
@reference_options
@scheduler_options
@quiet_option
def explain(
    bundle: Path,
    inputs: tuple[str, ...],
    output_dir: Path,
    config: ExplainConfig,
    runtime: Runtime,
    storage: Storage,
    selection: Selection,
    references: ReferenceData | None,
    scheduler: Scheduler | None,
    quiet: bool,
) -> None:
    """Explain every image of INPUT... (shard files, directories or built-in names) with BUNDLE.

    Writes one HDF5 file per input shard into --output: attributions, alignment mu, IG
    convergence deltas and output gaps, the tangential base-points, targets, predictions,
    tangent ranks, chance levels and flags, and the faithfulness metrics (--metrics) of every
    explanation. Work is committed batch by batch: rerun the same command after a crash and it
    resumes where it stopped.

    The default methods are the paper's nine; --methods all adds Guided IG, Blur IG and
    Expected Gradients (guidedig, blurig, expectedgrad), which cost about eight 50-node IGs
    per image together; expectedgrad draws its base-points from --reference-data.

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
        tig-batch explain bundles/mnist mnist-5k -o all --methods all --reference-data mnist-5k
        tig-batch explain bundles/mnist mnist-5k -o fast --metrics none
        tig-batch explain bundles/mnist mnist-5k -o explained --scheduler dask --workers 4
    """
    from tig_batch.job import Job, plan
    from tig_batch.report import markdown_table, summarize

    try:
        job = Job(bundle, inputs, output_dir, config, runtime, storage, selection, references)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    planned = plan(job)
    outputs = _run(planned, scheduler, quiet)
    click.echo(f"Wrote {len(outputs)} file(s) to {output_dir}.")
    if not quiet:
        click.echo(markdown_table(summarize(outputs)), err=True)


def _run(planned: Plan, scheduler: Scheduler | None, quiet: bool) -> list[Path]:
    """Run with a progress bar; failed Dask shards are listed one per line on stderr before
    the error."""
    from tig_batch.distributed import ShardsFailedError
    from tig_batch.runner import run

    try:
        with progress_bar(planned.n_images, "explain", quiet) as bar:
            return run(planned, scheduler, bar.update)
    except ShardsFailedError as failed:
        debug = click.get_current_context().find_root().meta.get("tig_batch.debug")
        for failure in failed.failures:
            click.echo(f"failed: {failure.shard}: {failure.error}", err=True)
            if debug and failure.traceback:
                click.echo(failure.traceback, err=True)
        raise UserError(
            f"{len(failed.failures)} of {len(failed.failures) + len(failed.outputs)} shard(s) "
            f"failed; the {len(failed.outputs)} finished output(s) are kept in "
            f"{planned.job.output}: rerun the same command to complete the rest"
        ) from None
