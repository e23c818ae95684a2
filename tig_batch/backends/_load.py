"""Open a model bundle with either backend: ONNX Runtime (the default) or torch (the reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tig_batch._bundle import (
    CLASSIFIER,
    CLASSIFIER_FORWARD,
    DECODER_JVP,
    ENCODER,
    Manifest,
    read_manifest,
)
from tig_batch.backends._base import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, Manifold
from tig_batch.backends._onnx import OnnxClassifier, OnnxManifold, SessionSettings
from tig_batch.backends._torch import TorchClassifier, TorchManifold
from tig_batch.errors import ModelError

BackendName = Literal["onnx", "torch"]


@dataclass(frozen=True)
class Bundle:
    """A loaded model bundle: its manifest and the two models behind the protocols."""

    path: Path
    manifest: Manifest
    backend: BackendName
    classifier: Classifier
    manifold: Manifold


def load_bundle(
    path: Path | str,
    backend: BackendName = "onnx",
    settings: SessionSettings | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Bundle:
    """Check a bundle's manifest and checksums, then open its models with ``backend``.

    ``onnx`` runs the exported graphs in ONNX Runtime; ``torch`` rebuilds the PyTorch models
    from the checkpoints the bundle carries, for reference runs and exact second derivatives.
    """
    path, settings = Path(path), settings or SessionSettings()
    manifest = read_manifest(path)
    if backend == "onnx":
        forward = path / CLASSIFIER_FORWARD if CLASSIFIER_FORWARD in manifest.files else None
        classifier: Classifier = OnnxClassifier(
            path / CLASSIFIER, manifest.explained_output, manifest.n_classes, settings, forward
        )
        manifold: Manifold = OnnxManifold(
            path / ENCODER, path / DECODER_JVP, manifest.latent_dim, settings, internal_batch_size
        )
    elif backend == "torch":
        classifier, manifold = _torch_models(path, manifest, settings, internal_batch_size)
    else:
        raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
    return Bundle(path, manifest, backend, classifier, manifold)


def _torch_models(
    path: Path, manifest: Manifest, settings: SessionSettings, internal_batch_size: int
) -> tuple[TorchClassifier, TorchManifold]:
    from tig_batch.models import load_autoencoder, load_classifier, load_user_model

    recipe = manifest.torch_models
    if "classifier" not in recipe or "autoencoder" not in recipe:
        raise ModelError(f"{path}: this bundle carries no torch models; use the onnx backend")
    classifier_recipe = recipe["classifier"]
    if "checkpoint" in classifier_recipe:
        module, _ = load_classifier(path / classifier_recipe["checkpoint"])
    else:
        weights = classifier_recipe.get("weights")
        module = load_user_model(classifier_recipe["factory"], weights and path / weights)
    autoencoder, _ = load_autoencoder(path / recipe["autoencoder"]["checkpoint"])
    device = settings.device
    classifier = TorchClassifier(module.to(device), manifest.explained_output)
    manifold = TorchManifold(
        autoencoder.encoder.to(device), autoencoder.decoder.to(device), internal_batch_size
    )
    return classifier, manifold
