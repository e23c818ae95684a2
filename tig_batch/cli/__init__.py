"""The ``tig-batch`` command line: a thin Click layer over the Python API."""

from __future__ import annotations

import click

from tig_batch import __version__
from tig_batch.cli.bench import bench

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="tig-batch")
def main() -> None:
    """Explain image classifiers at dataset scale with tangentially aligned Integrated Gradients.

    tig-batch chooses, per image, the IG base-point whose explanation lies in the tangent
    space of the data manifold (learned by an autoencoder), and reports how well every
    explanation is aligned with it.

    \b
    Example:
        tig-batch quickstart
    """


@main.command()
def quickstart() -> None:
    """Run the whole job on the bundled MNIST digits: train, export, explain, report.

    \b
    Example:
        tig-batch quickstart
    """
    click.echo(
        "tig-batch quickstart will build the mnist-5k shards, train a classifier and an "
        "autoencoder, export them to ONNX, explain the test digits with every method and write "
        "a report. This release ships the numerical engine only (see docs/api.md); the "
        "pipeline lands with the data, export and explain commands."
    )


main.add_command(bench)

if __name__ == "__main__":
    main()
