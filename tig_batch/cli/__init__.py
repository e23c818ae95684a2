"""The ``tig-batch`` command line: a thin Click layer over the Python API."""

from __future__ import annotations

import click

from tig_batch import __version__
from tig_batch.cli._common import CONTEXT_SETTINGS, TigGroup
from tig_batch.cli.bench import bench
from tig_batch.cli.explain import explain
from tig_batch.cli.export import export
from tig_batch.cli.info import info
from tig_batch.cli.ingest import ingest
from tig_batch.cli.quickstart import quickstart
from tig_batch.cli.report import report
from tig_batch.cli.sanity import sanity
from tig_batch.cli.train import evaluate, train


@click.group(cls=TigGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="tig-batch")
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Explain image classifiers at dataset scale with tangentially aligned Integrated Gradients.

    tig-batch chooses, per image, the IG base-point whose explanation lies in the tangent
    space of the data manifold (learned by an autoencoder), and reports how well every
    explanation is aligned with it.

    \b
    Example:
        tig-batch quickstart
    """
    ctx.meta["tig_batch.debug"] = debug


main.add_command(ingest)
main.add_command(info)
main.add_command(train)
main.add_command(evaluate)
main.add_command(export)
main.add_command(explain)
main.add_command(report)
main.add_command(sanity)
main.add_command(bench)
main.add_command(quickstart)

if __name__ == "__main__":
    main()
