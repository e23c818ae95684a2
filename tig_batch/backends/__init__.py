"""The model boundary: protocols, their torch and ONNX Runtime implementations, bundles."""

from tig_batch.backends._base import (
    Classifier,
    ExplainedOutput,
    Manifold,
    SecondOrderClassifier,
    explained_value,
)
from tig_batch.backends._load import BackendName, Bundle, load_bundle
from tig_batch.backends._onnx import OnnxClassifier, OnnxManifold, SessionSettings
from tig_batch.backends._runtime import DEFAULT_INTERNAL_BATCH_SIZE, Runtime
from tig_batch.backends._torch import TorchClassifier, TorchManifold

__all__ = [
    "DEFAULT_INTERNAL_BATCH_SIZE",
    "BackendName",
    "Bundle",
    "Classifier",
    "ExplainedOutput",
    "Manifold",
    "OnnxClassifier",
    "OnnxManifold",
    "Runtime",
    "SecondOrderClassifier",
    "SessionSettings",
    "TorchClassifier",
    "TorchManifold",
    "explained_value",
    "load_bundle",
]
