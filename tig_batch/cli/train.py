"""``tig-batch train classifier|autoencoder`` and ``tig-batch evaluate``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tig_batch.cli._common import (
    CONTEXT_SETTINGS,
    TigGroup,
    classifier_options,
    load_classifier_from_options,
    log_to_stderr,
    quiet_option,
)


def _datasets(data: str, test_data: str | None):
    from tig_batch.data import BUILTIN_DATASETS, resolve_dataset

    train = resolve_dataset(data, "train")
    if test_data is None and data in BUILTIN_DATASETS:
        test_data = data
    test = None if test_data is None else resolve_dataset(test_data, "test")
    return train, test


def training_options(default_epochs: int, default_output: str) -> Callable:
    """Options both trainings share: data, output, optimisation, reproducibility."""

    def decorate(f: Callable) -> Callable:
        for option in reversed([
            click.option("--data", default="mnist-5k", show_default=True, metavar="DATASET",
                         help="Training shards (file or directory) or a built-in name."),
            click.option("--test-data", metavar="DATASET",
                         help="Test shards (default: the built-in's test split; none for paths)."),
            click.option("-o", "--output", type=click.Path(path_type=Path),
                         default=default_output, show_default=True,
                         help="Checkpoint name: writes NAME.pt, NAME.json, NAME.metrics.json."),
            click.option("--epochs", type=click.IntRange(1), default=default_epochs,
                         show_default=True),
            click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3,
                         show_default=True, help="Peak Adam learning rate (cosine decay)."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--threads", type=click.IntRange(1),
                         help="torch CPU threads (default: torch's choice)."),
            click.option("--max-steps", type=click.IntRange(1),
                         help="Stop after this many steps (smoke tests)."),
            quiet_option,
        ]):  # fmt: skip
            f = option(f)
        return f

    return decorate


def _config(opts: dict[str, Any]):
    from tig_batch.models import TrainConfig

    return TrainConfig(
        epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"], seed=opts["seed"],
        threads=opts["threads"], max_steps=opts["max_steps"],
    )  # fmt: skip


def _finish(result: Any, output: Path) -> None:
    from tig_batch.models import save_checkpoint

    weights = save_checkpoint(output, result.model, result.metadata)
    click.echo(f"{weights}: " + json.dumps(_rounded(result.metrics)))


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}


@click.group(cls=TigGroup, context_settings=CONTEXT_SETTINGS)
def train() -> None:
    """Train the classifier to explain, or the autoencoder that gives the data manifold.

    \b
    Example:
        tig-batch train classifier --data mnist-5k -o checkpoints/classifier
    """


@train.command("classifier")
@training_options(default_epochs=10, default_output="checkpoints/classifier")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.3,
              show_default=True)  # fmt: skip
def train_classifier_cmd(dropout: float, **opts: Any) -> None:
    """Train the small CNN classifier from shards; print and save its test accuracy.

    \b
    Example:
        tig-batch train classifier --data mnist-5k --threads 2 -o checkpoints/classifier
    """
    from tig_batch.models import ensure_writable, train_classifier

    ensure_writable(opts["output"])
    train, test = _datasets(opts["data"], opts["test_data"])
    result = train_classifier(
        train, test, _config(opts), dropout=dropout, progress=not opts["quiet"],
        log=log_to_stderr(opts["quiet"]),
    )  # fmt: skip
    _finish(result, opts["output"])


@train.command("autoencoder")
@training_options(default_epochs=20, default_output="checkpoints/autoencoder")
@click.option("-n", "--latent-dim", type=click.IntRange(1), default=16, show_default=True,
              help="Latent size n: the dimension of the learned manifold.")  # fmt: skip
def train_autoencoder_cmd(latent_dim: int, **opts: Any) -> None:
    """Train the convolutional autoencoder (latent size n); print and save its test MSE.

    \b
    Example:
        tig-batch train autoencoder --data mnist-5k -n 16 -o checkpoints/autoencoder
    """
    from tig_batch.models import ensure_writable, train_autoencoder

    ensure_writable(opts["output"])
    train, test = _datasets(opts["data"], opts["test_data"])
    result = train_autoencoder(
        train, test, _config(opts), latent_dim=latent_dim, progress=not opts["quiet"],
        log=log_to_stderr(opts["quiet"]),
    )  # fmt: skip
    _finish(result, opts["output"])


@click.command("evaluate", context_settings=CONTEXT_SETTINGS)
@classifier_options
@click.option("--data", default="mnist-5k", show_default=True, metavar="DATASET",
              help="Labelled shards or a built-in name (its test split).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
def evaluate(
    checkpoint: Path | None, model_spec: str | None, weights: Path | None, data: str,
    batch_size: int,
) -> None:  # fmt: skip
    """Measure a classifier's accuracy on labelled shards (yours via --model, or a checkpoint).

    \b
    Example:
        tig-batch evaluate --model mypkg.nets:make_cnn --weights cnn.pt --data mnist-5k
    """
    from tig_batch.data import resolve_dataset
    from tig_batch.models import evaluate_classifier

    model, _ = load_classifier_from_options(checkpoint, model_spec, weights)
    info = resolve_dataset(data, "test")
    click.echo(json.dumps(_rounded(evaluate_classifier(model, info, batch_size))))
