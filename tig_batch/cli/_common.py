"""What every command shares: error handling, --quiet, model options, progress on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from tqdm import tqdm

from tig_batch.errors import TigBatchError

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class UserError(click.ClickException):
    """A :class:`TigBatchError` shown as ``Error: ...`` with exit code 2 (usage and data)."""

    exit_code = 2


class TigGroup(click.Group):
    """A Click group whose commands turn :class:`TigBatchError` into a one-line error.

    The traceback is kept only when the root group was given ``--debug``; any other
    exception is a bug and propagates unchanged.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TigBatchError as exc:
            if ctx.find_root().meta.get("tig_batch.debug"):
                raise
            raise UserError(" ".join(str(exc).split("\n"))) from None


def quiet_option(f: F) -> F:
    """``-q/--quiet``: no progress bars or summaries on stderr (results still print)."""
    return click.option(
        "-q", "--quiet", is_flag=True, help="No progress bars or summaries on stderr."
    )(f)


def log_to_stderr(quiet: bool) -> Callable[[str], None] | None:
    """A logger for library calls: a line on stderr, or nothing when quiet."""
    return None if quiet else (lambda message: click.echo(message, err=True))


def progress_bar(total: int | None, desc: str, quiet: bool, unit: str = "img") -> tqdm:
    """A tqdm bar on stderr with throughput, disabled by ``--quiet``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=quiet,
        delay=0.5,
    )


def classifier_options(f: F) -> F:
    """``--checkpoint`` (a tig-batch classifier) or ``--model`` + ``--weights`` (your own)."""
    f = click.option(
        "--weights",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="State dict for --model (read with torch.load(weights_only=True)).",
    )(f)
    f = click.option(
        "--model",
        "model_spec",
        metavar="MODULE:FACTORY",
        help="Your own classifier: package.module:factory or file.py:factory, called with no "
        "arguments; it must take images in the dataset's value range and return logits.",
    )(f)
    f = click.option(
        "--checkpoint",
        type=click.Path(path_type=Path),
        help="A classifier trained by `tig-batch train classifier` (its .pt or .json).",
    )(f)
    return f


def load_classifier_from_options(
    checkpoint: Path | None, model_spec: str | None, weights: Path | None
) -> tuple[Any, dict | None]:
    """The classifier the options name: (module in eval mode, tig-batch metadata or None)."""
    from tig_batch.models import load_classifier, load_user_model

    if (checkpoint is None) == (model_spec is None):
        raise click.UsageError("give exactly one of --checkpoint or --model MODULE:FACTORY")
    if weights is not None and model_spec is None:
        raise click.UsageError("--weights goes with --model")
    if checkpoint is not None:
        return load_classifier(checkpoint)
    return load_user_model(model_spec, weights), None
