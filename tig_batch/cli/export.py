"""``tig-batch export``: turn trained models into a verified ONNX bundle."""

from __future__ import annotations

from pathlib import Path

import click

from tig_batch.cli._common import classifier_options, quiet_option


@click.command()
@classifier_options
@click.option(
    "--autoencoder", type=click.Path(path_type=Path),
    help="An autoencoder trained by `tig-batch train autoencoder` (its .pt or .json).",
)  # fmt: skip
@click.option(
    "--autoencoder-model", "autoencoder_spec", metavar="MODULE:FACTORY",
    help="Your own autoencoder, as --model: the factory returns a module with .encoder (images "
    "to codes) and .decoder (codes to images).",
)  # fmt: skip
@click.option(
    "--autoencoder-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="State dict for --autoencoder-model (read with torch.load(weights_only=True)).",
)  # fmt: skip
@click.option(
    "-o", "--output", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Bundle directory to write.",
)  # fmt: skip
@click.option(
    "--explain", "explained", type=click.Choice(["logit", "probability"]), default="logit",
    show_default=True, help="The explained output f_c: the class logit or its softmax probability.",
)  # fmt: skip
@click.option(
    "--verify-data", metavar="DATASET",
    help="Real images to verify the export on (default: the autoencoder's training data). "
    "With --model and --autoencoder-model, also the input shape, value range and class names.",
)  # fmt: skip
@click.option(
    "--tolerance", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
    help="Largest ONNX-vs-torch error allowed, relative to the largest reference value.",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle.")
@quiet_option
def export(
    checkpoint: Path | None,
    model_spec: str | None,
    weights: Path | None,
    autoencoder: Path | None,
    autoencoder_spec: str | None,
    autoencoder_weights: Path | None,
    directory: Path,
    explained: str,
    verify_data: str | None,
    tolerance: float,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Export a classifier and an autoencoder to an ONNX bundle that `explain` runs.

    Writes classifier.onnx (logits and the input-gradient of the explained output),
    classifier_forward.onnx (logits only), encoder.onnx, decoder_jvp.onnx (decoder
    Jacobian-vector products), copies of the torch checkpoints (for `--backend torch`) and
    manifest.json with every file's sha256. Your own models (--model, --autoencoder-model)
    are kept as their weights and, for a file.py:factory, a copy of that file (it must import
    only installed packages), so `--backend torch` finds them from any directory. The export is
    verified against torch autograd before the bundle appears.

    \b
    Example:
        tig-batch export --checkpoint checkpoints/classifier \\
            --autoencoder checkpoints/autoencoder -o bundles/mnist
        tig-batch export --model nets.py:make_cnn --weights cnn.pt \\
            --autoencoder-model nets.py:make_autoencoder --autoencoder-weights ae.pt \\
            --verify-data mnist/test -o bundles/mine
    """
    from tig_batch.export import export_checkpoints

    for one, other, name in (
        (checkpoint, model_spec, "--checkpoint or --model MODULE:FACTORY"),
        (autoencoder, autoencoder_spec, "--autoencoder or --autoencoder-model MODULE:FACTORY"),
    ):
        if (one is None) == (other is None):
            raise click.UsageError(f"give exactly one of {name}")
    if weights is not None and model_spec is None:
        raise click.UsageError("--weights goes with --model")
    if autoencoder_weights is not None and autoencoder_spec is None:
        raise click.UsageError("--autoencoder-weights goes with --autoencoder-model")
    if not quiet:
        click.echo(f"Tracing and exporting to {directory} ...", err=True)
    manifest = export_checkpoints(
        autoencoder, directory, checkpoint=checkpoint, model_spec=model_spec, weights=weights,
        autoencoder_spec=autoencoder_spec, autoencoder_weights=autoencoder_weights,
        output=explained, verify_data=verify_data, tolerance=tolerance, overwrite=overwrite,  # type: ignore[arg-type]
    )  # fmt: skip
    spec = manifest.input
    errors = manifest.verification["max_relative_error"]
    click.echo(
        f"Wrote {directory}: {spec.shape} inputs, {manifest.n_classes} classes, latent "
        f"n = {manifest.latent_dim}; verified against torch (max relative error "
        f"{max(errors.values()):.1e})."
    )
