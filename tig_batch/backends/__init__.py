"""The model boundary: protocols and their torch implementation (ONNX Runtime lands beside it)."""

from tig_batch.backends._base import (
    Classifier,
    ExplainedOutput,
    Manifold,
    SecondOrderClassifier,
    explained_value,
)
from tig_batch.backends._torch import TorchClassifier, TorchManifold

__all__ = [
    "Classifier",
    "ExplainedOutput",
    "Manifold",
    "SecondOrderClassifier",
    "TorchClassifier",
    "TorchManifold",
    "explained_value",
]
