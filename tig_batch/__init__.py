"""tig-batch: tangentially aligned Integrated Gradients at dataset scale.

The public API is what ``__all__`` lists; every other module is private. The main path: build
a :class:`Job` (what to explain, an :class:`ExplainConfig`, a :class:`Runtime`, a
:class:`Storage`) and :func:`run` it; :func:`explain_batches` is the same explanations over
in-memory batches, :func:`write_report` the tables and figures of the outputs.
"""

from tig_batch._selection import Selection
from tig_batch.backends import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    Bundle,
    Classifier,
    ExplainedOutput,
    Manifold,
    Runtime,
    SecondOrderClassifier,
    TorchClassifier,
    TorchManifold,
    load_bundle,
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
from tig_batch.job import Job, Plan, Storage, plan
from tig_batch.pipeline import METHODS, ExplainConfig, Explanations, Flag, explain, explain_batches
from tig_batch.report import write_report
from tig_batch.runner import LocalScheduler, Scheduler, run

__version__ = "0.1.0"

__all__ = [
    "BASELINE_KINDS",
    "DEFAULT_INTERNAL_BATCH_SIZE",
    "FRONTIER_GAP_FRACTIONS",
    "METHODS",
    "RULES",
    "Attribution",
    "BaselineSearch",
    "Bundle",
    "Classifier",
    "DataError",
    "ExplainConfig",
    "ExplainedOutput",
    "Explanations",
    "Flag",
    "Job",
    "LocalScheduler",
    "Manifold",
    "ModelError",
    "Plan",
    "Quadrature",
    "Runtime",
    "Scheduler",
    "SearchResult",
    "SecondOrderClassifier",
    "Selection",
    "Storage",
    "TangentSpace",
    "TigBatchError",
    "TorchClassifier",
    "TorchManifold",
    "__version__",
    "alignment",
    "chance_level",
    "explain",
    "explain_batches",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "load_bundle",
    "make_baselines",
    "optimal_baselines",
    "plan",
    "quadrature",
    "reference_gaps",
    "run",
    "smoothgrad",
    "tangent_basis",
    "tangent_space",
    "user_baselines",
    "write_report",
]
