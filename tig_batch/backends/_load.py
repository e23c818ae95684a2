"""Open a model bundle with either backend: ONNX Runtime (the default) or torch (the reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

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
    recipe = manifest.torch_models
    if "classifier" not in recipe or "autoencoder" not in recipe:
        raise ModelError(f"{path}: this bundle carries no torch models; use the onnx backend")
    module = _torch_model(path, "classifier", recipe["classifier"])
    autoencoder = _torch_model(path, "autoencoder", recipe["autoencoder"])
    device = settings.device
    classifier = TorchClassifier(module.to(device), manifest.explained_output)
    manifold = TorchManifold(
        autoencoder.encoder.to(device), autoencoder.decoder.to(device), internal_batch_size
    )
    return classifier, manifold


def _torch_model(path: Path, kind: str, recipe: dict[str, Any]) -> nn.Module:
    """Rebuild one model from its checkpoint in the bundle, or its user's ``module:factory``
    (a ``file.py`` inside the bundle; bundles of older versions named it as exported)."""
    from tig_batch.models import (
        load_checkpoint,
        load_user_autoencoder,
        load_user_model,
    )

    if "checkpoint" in recipe:
        return load_checkpoint(path / recipe["checkpoint"], kind)[0]
    factory = recipe["factory"]
    module, _, name = factory.partition(":")
    if module.endswith(".py") and (path / module).is_file():
        factory = f"{path / module}:{name}"
    weights = recipe.get("weights")
    load = load_user_autoencoder if kind == "autoencoder" else load_user_model
    return load(factory, weights and path / weights)
