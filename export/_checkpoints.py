"""A bundle from checkpoints on disk: what ``tig-batch export`` and ``quickstart`` share.

Loads a tig-batch classifier checkpoint (or a user's ``module:factory`` plus weights) and an
autoencoder checkpoint, and exports them with :func:`export_bundle`, copying the torch files
into the bundle together with the recipe the torch backend rebuilds the models from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tig_batch._bundle import InputSpec, Manifest
from tig_batch.backends import ExplainedOutput
from tig_batch.errors import ModelError
from tig_batch.export._bundle import export_bundle
from tig_batch.export._verify import DEFAULT_TOLERANCE

VERIFY_IMAGES = 7


def verify_images(data: str | Path | None, autoencoder_metadata: dict) -> torch.Tensor | None:
    """Up to 7 real images: from ``data``, else the autoencoder's training data if still there."""
    from tig_batch.data import iter_batches, resolve_dataset

    train_data = autoencoder_metadata.get("training", {}).get("train_data") or {}
    source = data or train_data.get("path")
    if source is None or (data is None and not Path(source).exists()):
        return None
    batch = next(iter_batches(resolve_dataset(source, "test"), VERIFY_IMAGES, labels=False))
    return torch.from_numpy(batch.images)


def export_checkpoints(
    autoencoder: Path | str,
    directory: Path | str,
    *,
    checkpoint: Path | str | None = None,
    model_spec: str | None = None,
    weights: Path | str | None = None,
    output: ExplainedOutput = "logit",
    verify_data: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
) -> Manifest:
    """Export a classifier (``checkpoint``, or ``model_spec`` + ``weights``) and an autoencoder.

    Exactly one of ``checkpoint`` and ``model_spec`` names the classifier. The bundle holds the
    ONNX graphs, copies of the torch files and the recipe for ``load_bundle(..., "torch")``.
    """
    from tig_batch.models import (
        checkpoint_paths,
        load_autoencoder,
        load_classifier,
        load_user_model,
    )

    if (checkpoint is None) == (model_spec is None):
        raise ModelError("give exactly one of checkpoint or model_spec for the classifier")
    if weights is not None and model_spec is None:
        raise ModelError("weights go with model_spec (a tig-batch checkpoint holds its own)")
    classifier_meta: dict | None = None
    if checkpoint is not None:
        classifier, classifier_meta = load_classifier(checkpoint)
    else:
        classifier = load_user_model(model_spec, weights)  # type: ignore[arg-type]
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
            files["torch/classifier.pt"] = Path(weights)
    return export_bundle(
        classifier, ae_model.encoder, ae_model.decoder, directory, spec, meta["class_names"],
        output, verify_images(verify_data, ae_meta), tolerance, overwrite, files, recipe,
    )  # fmt: skip
