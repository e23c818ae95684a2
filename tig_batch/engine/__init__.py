"""The numerical core: arrays and model protocols in, result dataclasses out. No files."""

from tig_batch.engine._baselines import (
    BASELINE_KINDS,
    BaselineKind,
    ValueRange,
    make_baselines,
    user_baselines,
)
from tig_batch.engine._blur_ig import blur_integrated_gradients
from tig_batch.engine._expected_gradients import (
    ReferenceDraws,
    expected_gradients,
    reference_draws,
)
from tig_batch.engine._explainers import gradient, input_x_gradient, smoothgrad
from tig_batch.engine._flipping import DeletionInsertion, deletion_insertion, pixel_order
from tig_batch.engine._frontier import FRONTIER_GAP_FRACTIONS
from tig_batch.engine._guided_ig import guided_integrated_gradients
from tig_batch.engine._ig import (
    Attribution,
    Target,
    explained_outputs,
    integrated_gradients,
    reference_gaps,
    resolve_target,
)
from tig_batch.engine._metrics import (
    Explainer,
    infidelities,
    infidelity,
    infidelity_perturbations,
    rank_correlation,
    sensitivity_max,
    sensitivity_perturbations,
    sparseness,
)
from tig_batch.engine._projection import IGProjection
from tig_batch.engine._quadrature import RULES, Quadrature, Rule, quadrature
from tig_batch.engine._search import OPTIMIZERS, BaselineSearch, SearchResult, optimal_baselines
from tig_batch.engine._tangent import (
    TangentSpace,
    alignment,
    chance_level,
    tangent_basis,
    tangent_space,
)

__all__ = [
    "BASELINE_KINDS",
    "FRONTIER_GAP_FRACTIONS",
    "OPTIMIZERS",
    "RULES",
    "Attribution",
    "BaselineKind",
    "BaselineSearch",
    "DeletionInsertion",
    "Explainer",
    "IGProjection",
    "Quadrature",
    "ReferenceDraws",
    "Rule",
    "SearchResult",
    "TangentSpace",
    "Target",
    "ValueRange",
    "alignment",
    "blur_integrated_gradients",
    "chance_level",
    "deletion_insertion",
    "expected_gradients",
    "explained_outputs",
    "gradient",
    "guided_integrated_gradients",
    "infidelities",
    "infidelity",
    "infidelity_perturbations",
    "input_x_gradient",
    "integrated_gradients",
    "make_baselines",
    "optimal_baselines",
    "pixel_order",
    "quadrature",
    "rank_correlation",
    "reference_draws",
    "reference_gaps",
    "resolve_target",
    "sensitivity_max",
    "sensitivity_perturbations",
    "smoothgrad",
    "sparseness",
    "tangent_basis",
    "tangent_space",
    "user_baselines",
]
