"""``tig-batch export``: turn trained models into a verified ONNX bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tig_batch.cli._common import classifier_options, load_classifier_from_options, quiet_option


def _verify_images(data: str | None, metadata: dict) -> Any:
    """Up to 7 real images: from --verify-data, else the autoencoder's training data if present."""
    import torch

    from tig_batch.data import iter_batches, resolve_dataset

    source = data or (metadata.get("training", {}).get("train_data") or {}).get("path")
    if source is None or (data is None and not Path(source).exists()):
        return None
    batch = next(iter_batches(resolve_dataset(source, "test"), 7, labels=False))
    return torch.from_numpy(batch.images)


@click.command()
@classifier_options
@click.option(
    "--autoencoder", required=True, type=click.Path(path_type=Path),
    help="An autoencoder trained by `tig-batch train autoencoder` (its .pt or .json).",
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
    help="Real images to verify the export on (default: the autoencoder's training data).",
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
    autoencoder: Path,
    directory: Path,
    explained: str,
    verify_data: str | None,
    tolerance: float,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Export a classifier and an autoencoder to an ONNX bundle that `explain` runs.

    Writes classifier.onnx (logits and the input-gradient of the explained output),
    encoder.onnx, decoder_jvp.onnx (decoder Jacobian-vector products), copies of the torch
    checkpoints (for `--backend torch`) and manifest.json with every file's sha256. The
    export is verified against torch autograd before the bundle appears.

    \b
    Example:
        tig-batch export --checkpoint checkpoints/classifier \\
            --autoencoder checkpoints/autoencoder -o bundles/mnist
    """
    from tig_batch._bundle import InputSpec
    from tig_batch.export import export_bundle
    from tig_batch.models import checkpoint_paths, load_autoencoder

    classifier, classifier_meta = load_classifier_from_options(checkpoint, model_spec, weights)
    ae_model, ae_meta = load_autoencoder(autoencoder)
    meta = classifier_meta or ae_meta
    spec = InputSpec(
        tuple(meta["input"]["shape"]), tuple(meta["input"]["value_range"]),
        (classifier_meta or {}).get("input", {}).get("normalization"),
    )  # fmt: skip
    ae_weights, ae_json, _ = checkpoint_paths(autoencoder)
    files = {"torch/autoencoder.pt": ae_weights, "torch/autoencoder.json": ae_json}
    recipe: dict[str, Any] = {"autoencoder": {"checkpoint": "torch/autoencoder.json"}}
    if checkpoint is not None:
        clf_weights, clf_json, _ = checkpoint_paths(checkpoint)
        files |= {"torch/classifier.pt": clf_weights, "torch/classifier.json": clf_json}
        recipe["classifier"] = {"checkpoint": "torch/classifier.json"}
    else:
        recipe["classifier"] = {"factory": model_spec, "weights": weights and "torch/classifier.pt"}
        if weights is not None:
            files["torch/classifier.pt"] = weights
    if not quiet:
        click.echo(f"Tracing and exporting to {directory} ...", err=True)
    manifest = export_bundle(
        classifier, ae_model.encoder, ae_model.decoder, directory, spec, meta["class_names"],
        explained, _verify_images(verify_data, ae_meta), tolerance, overwrite, files, recipe,
    )  # fmt: skip
    errors = manifest.verification["max_relative_error"]
    click.echo(
        f"Wrote {directory}: {spec.shape} inputs, {manifest.n_classes} classes, latent "
        f"n = {manifest.latent_dim}; verified against torch (max relative error "
        f"{max(errors.values()):.1e})."
    )
