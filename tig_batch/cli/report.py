"""``tig-batch report``: tables and figures from explain outputs."""

from __future__ import annotations

from pathlib import Path

import click

from tig_batch.cli._common import quiet_option
from tig_batch.report import COLOUR_SCALES


def _ids(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    chosen = [i.strip() for i in value.split(",") if i.strip()]
    if not chosen:
        raise click.BadParameter("give comma-separated image ids, e.g. --ids 4,17,2310")
    return chosen


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Directory for report.html, summary.md/.json and the figures.",
)  # fmt: skip
@click.option(
    "--ids", callback=_ids, metavar="ID,ID,...",
    help="Images to show in examples.png (default: spread over the target classes).",
)  # fmt: skip
@click.option(
    "--examples", "n_examples", type=click.IntRange(0), default=10, show_default=True,
    help="How many images examples.png shows when --ids is not given (0: no examples).",
)  # fmt: skip
@click.option(
    "--colour-scale", type=click.Choice(COLOUR_SCALES), default="row", show_default=True,
    help="examples.png: row shares one colour scale among an image's methods (magnitudes "
    "compare); method gives each panel its own (every pattern shows, magnitudes do not "
    "compare).",
)  # fmt: skip
@quiet_option
def report(
    results: tuple[Path, ...], out_dir: Path, ids: list[str] | None, n_examples: int,
    colour_scale: str, quiet: bool,
) -> None:  # fmt: skip
    """Summarise explain outputs (RESULTS: files or directories) into tables and figures.

    Writes summary.md and summary.json (per method: count, mean, median, 10th and 90th
    percentile of mu, share above the chance level; for IG methods the mean output gap, also
    as a share of the zero base-point's, and |delta|; flagged count and why),
    alignment_density.png, alignment_gap_frontier.png (tangential IG's best mu at each output
    gap kept, beside every other method), examples.png and a self-contained report.html;
    prints the table.

    \b
    Example:
        tig-batch report explained/ --out report --ids 4,17,2310
    """
    from tig_batch.report import markdown_table, write_report

    written = write_report(results, out_dir, ids, n_examples, colour_scale)  # type: ignore[arg-type]
    click.echo(markdown_table(written.summaries, written.chance_level), nl=False)
    if not quiet:
        for note in written.notes:
            click.echo(f"Note: {note}; examples are shown without it.", err=True)
        others = [p.name for k, p in written.files.items() if k != "html"]
        click.echo(
            f"Wrote {written.files['html']} (and {', '.join(others)}) for "
            f"{written.n_images} images.",
            err=True,
        )
