"""``tig-batch info``: validate a dataset and show its attributes."""

from __future__ import annotations

import json

import click

from tig_batch.cli._common import CONTEXT_SETTINGS


@click.command("info", context_settings=CONTEXT_SETTINGS)
@click.argument("dataset")
@click.option("--split", default="test", show_default=True, help="Split of a built-in dataset.")
def info(dataset: str, split: str) -> None:
    """Validate a dataset (shards or a built-in name) and print its attributes as JSON.

    \b
    Example:
        tig-batch info mnist-5k --split train
    """
    from tig_batch.data import resolve_dataset

    d = resolve_dataset(dataset, split)
    click.echo(
        json.dumps(
            {
                "path": str(d.path),
                "shards": [{"path": str(s.path), "count": s.count} for s in d.shards],
                "count": d.count,
                "shape": list(d.shape),
                "dtype": d.dtype,
                "value_range": list(d.value_range),
                "channel_layout": d.channel_layout,
                "class_names": list(d.class_names),
                "split": d.split,
                "source": d.source,
                "has_labels": d.has_labels,
                "has_ids": d.has_ids,
            },
            indent=2,
        )
    )
