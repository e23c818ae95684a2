"""The numerical core: arrays and model protocols in, result dataclasses out. No files."""

from tig_batch.engine._baselines import (
    BASELINE_KINDS,
    BaselineKind,
    ValueRange,
    make_baselines,
    user_baselines,
)
from tig_batch.engine._explainers import gradient, input_x_gradient, smoothgrad
from tig_batch.engine._frontier import FRONTIER_GAP_FRACTIONS
from tig_batch.engine._ig import (
    Attribution,
    Target,
    explained_outputs,
    integrated_gradients,
    reference_gaps,
    resolve_target,
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
    "IGProjection",
    "Quadrature",
    "Rule",
    "SearchResult",
    "TangentSpace",
    "Target",
    "ValueRange",
    "alignment",
    "chance_level",
    "explained_outputs",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "make_baselines",
    "optimal_baselines",
    "quadrature",
    "reference_gaps",
    "resolve_target",
    "smoothgrad",
    "tangent_basis",
    "tangent_space",
    "user_baselines",
]
