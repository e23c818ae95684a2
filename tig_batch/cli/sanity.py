"""``tig-batch sanity``: the model-randomisation check of the chosen methods on a bundle.

A thin layer: the option groups build the explanations' configuration, the selection and the
reference data as for ``explain``; :func:`tig_batch.sanity_check` runs the check and
``tig_batch.report`` prints, records and draws it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tig_batch.cli._common import progress_bar, quiet_option
from tig_batch.cli._config_options import explanation_options
from tig_batch.cli._job_options import reference_options, selection_options
from tig_batch.sanity import DEFAULT_SANITY_THRESHOLD

if TYPE_CHECKING:
    from tig_batch._references import ReferenceData
    from tig_batch._selection import Selection
    from tig_batch.pipeline import ExplainConfig


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--layers", "n_layers", type=click.IntRange(1),
    help="How many of the classifier's layers with parameters to re-draw, from the top "
    "[default: all of them].",
)  # fmt: skip
@click.option(
    "--threshold", type=click.FloatRange(-1, 1), default=DEFAULT_SANITY_THRESHOLD,
    show_default=True,
    help="An image passes when the rank correlation of |attributions| with the original has "
    "fallen below this with every layer re-drawn; a method passes when most images do.",
)  # fmt: skip
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write every image's rank correlations and verdicts to this JSON file.",
)  # fmt: skip
@click.option(
    "--figure", "figure_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the mean rank correlation per method against the layers re-drawn (PNG).",
)  # fmt: skip
@explanation_options
@selection_options
@reference_options
@quiet_option
def sanity(
    bundle: Path,
    inputs: tuple[str, ...],
    n_layers: int | None,
    threshold: float,
    json_path: Path | None,
    figure_path: Path | None,
    config: ExplainConfig,
    selection: Selection,
    references: ReferenceData | None,
    quiet: bool,
) -> None:
    """Check that the chosen methods' explanations of INPUT... depend on BUNDLE's weights.

    The model-randomisation test of Adebayo et al. (2018), cascading: the classifier's layers
    with parameters are re-drawn with their own initialisers from the top (the output layer,
    then the one below too, ...), and after each step every method explains the images again,
    with the settings `explain` gives it. The table shows the Spearman rank correlation of
    |attributions| with the original explanation (mean ± sd over the images) after each step;
    an explanation that barely moves when the weights are random says little about what the
    classifier learned, and fails. --seed seeds the methods as in `explain` and the re-drawn
    layers. Failing methods are a result: the exit code is 0 whenever the check ran.

    The bundle must keep its torch models (`tig-batch export` keeps them), since ONNX graphs'
    weights cannot be re-drawn. Use --limit or --ids: every image costs one explanation per
    method and step.

    \b
    Example:
        tig-batch sanity bundles/mnist mnist-5k --limit 32 --figure sanity.png
        tig-batch sanity bundles/mnist mnist-5k --limit 32 --methods gradient,zero --layers 2
        tig-batch sanity bundles/mnist mnist-5k --ids 0-9 --json sanity.json
    """
    from tig_batch._sanity_check import sanity_check
    from tig_batch.report._sanity import sanity_figure, sanity_record, sanity_table

    written = [path for path in (json_path, figure_path) if path is not None]
    for path in written:  # before the work, so a typo costs nothing
        _writable(path)
    with progress_bar(None, "sanity", quiet, unit="expl") as bar:

        def explained(n: int, total: int) -> None:
            bar.total = total
            bar.update(n)

        check = sanity_check(
            bundle, inputs, config, selection, references, n_layers, on_explained=explained
        )
    click.echo(sanity_table(check, threshold), nl=False)
    if json_path is not None:
        record = json.dumps(sanity_record(check, threshold), indent=1)
        _writing(json_path, lambda: json_path.write_text(record + "\n"))
    if figure_path is not None:
        _writing(figure_path, lambda: sanity_figure(check, figure_path, threshold))
    if written and not quiet:
        click.echo(f"Wrote {' and '.join(map(str, written))}.", err=True)


def _writable(path: Path) -> None:
    """Make ``path``'s directory, or refuse it naming the file."""
    _writing(path, lambda: path.parent.mkdir(parents=True, exist_ok=True))


def _writing(path: Path, write: Callable[[], object]) -> None:
    """Run ``write``; an OS error becomes a one-line error naming ``path``."""
    from tig_batch.errors import DataError

    try:
        write()
    except OSError as error:
        raise DataError(f"{path}: cannot write ({error.strerror or error})") from None
