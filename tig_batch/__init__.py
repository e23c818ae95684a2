"""tig-batch: tangentially aligned Integrated Gradients at dataset scale.

The public API is what ``__all__`` lists; every other module is private.
"""

from tig_batch.backends import (
    Classifier,
    ExplainedOutput,
    Manifold,
    SecondOrderClassifier,
    TorchClassifier,
    TorchManifold,
)
from tig_batch.engine import (
    BASELINE_KINDS,
    FRONTIER_GAP_FRACTIONS,
    RULES,
    Attribution,
    BaselineSearch,
    Quadrature,
    SearchResult,
    TangentSpace,
    alignment,
    chance_level,
    gradient,
    input_x_gradient,
    integrated_gradients,
    make_baselines,
    optimal_baselines,
    quadrature,
    reference_gaps,
    smoothgrad,
    tangent_basis,
    tangent_space,
    user_baselines,
)
from tig_batch.errors import DataError, ModelError, TigBatchError

__version__ = "0.1.0"

__all__ = [
    "BASELINE_KINDS",
    "FRONTIER_GAP_FRACTIONS",
    "RULES",
    "Attribution",
    "BaselineSearch",
    "Classifier",
    "DataError",
    "ExplainedOutput",
    "Manifold",
    "ModelError",
    "Quadrature",
    "SearchResult",
    "SecondOrderClassifier",
    "TangentSpace",
    "TigBatchError",
    "TorchClassifier",
    "TorchManifold",
    "__version__",
    "alignment",
    "chance_level",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "make_baselines",
    "optimal_baselines",
    "quadrature",
    "reference_gaps",
    "smoothgrad",
    "tangent_basis",
    "tangent_space",
    "user_baselines",
]
