"""Open a model bundle with either backend: ONNX Runtime (the default) or torch (the reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from tig_batch._bundle import (
    CLASSIFIER,
    CLASSIFIER_FORWARD,
    DECODER_JVP,
    ENCODER,
    Manifest,
    read_manifest,
)
from tig_batch.backends._base import Classifier, Manifold
from tig_batch.backends._onnx import OnnxClassifier, OnnxManifold
from tig_batch.backends._runtime import Runtime
from tig_batch.backends._torch import TorchClassifier, TorchManifold
from tig_batch.errors import ModelError


@dataclass(frozen=True)
class Bundle:
    """A loaded model bundle: its manifest, the runtime it was opened with, and the two models
    behind the protocols."""

    path: Path
    manifest: Manifest
    runtime: Runtime
    classifier: Classifier
    manifold: Manifold


def load_bundle(path: Path | str, runtime: Runtime | None = None) -> Bundle:
    """Check a bundle's manifest and checksums, then open its models as ``runtime`` says.

    ``runtime.backend`` ``onnx`` runs the exported graphs in ONNX Runtime; ``torch`` rebuilds
    the PyTorch models from the checkpoints the bundle carries, for reference runs and exact
    second derivatives.
    """
    path, runtime = Path(path), runtime or Runtime()
    if not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be a Runtime, e.g. Runtime('torch'), got {runtime!r}")
    manifest = read_manifest(path)
    if runtime.backend == "onnx":
        forward = path / CLASSIFIER_FORWARD if CLASSIFIER_FORWARD in manifest.files else None
        classifier: Classifier = OnnxClassifier(
            path / CLASSIFIER, manifest.explained_output, manifest.n_classes, runtime, forward
        )
        manifold: Manifold = OnnxManifold(
            path / ENCODER, path / DECODER_JVP, manifest.latent_dim, runtime
        )
    else:
        classifier, manifold = _torch_models(path, manifest, runtime)
    return Bundle(path, manifest, runtime, classifier, manifold)


def _torch_models(
    path: Path, manifest: Manifest, runtime: Runtime
) -> tuple[TorchClassifier, TorchManifold]:
    recipe = manifest.torch_models
    if "classifier" not in recipe or "autoencoder" not in recipe:
        raise ModelError(f"{path}: this bundle carries no torch models; use the onnx backend")
    module = _torch_model(path, "classifier", recipe["classifier"])
    autoencoder = _torch_model(path, "autoencoder", recipe["autoencoder"])
    device = runtime.device
    classifier = TorchClassifier(module.to(device), manifest.explained_output)
    manifold = TorchManifold(
        autoencoder.encoder.to(device), autoencoder.decoder.to(device),
        runtime.internal_batch_size,
    )  # fmt: skip
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
