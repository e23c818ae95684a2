"""The model boundary: protocols, their torch and ONNX Runtime implementations, bundles."""

from tig_batch.backends._base import (
    Classifier,
    ExplainedOutput,
    Manifold,
    SecondOrderClassifier,
    call_logits,
    call_logits_and_grad,
    call_manifold,
    explained_value,
    model_name,
)
from tig_batch.backends._load import Bundle, load_bundle
from tig_batch.backends._onnx import OnnxClassifier, OnnxManifold
from tig_batch.backends._runtime import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    BackendName,
    Optimization,
    Runtime,
)
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
    "Optimization",
    "Runtime",
    "SecondOrderClassifier",
    "TorchClassifier",
    "TorchManifold",
    "call_logits",
    "call_logits_and_grad",
    "call_manifold",
    "explained_value",
    "load_bundle",
    "model_name",
]
