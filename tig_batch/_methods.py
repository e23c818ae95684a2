"""Every method by name: the method lists, and one method's explanation of a batch.

What :func:`tig_batch.pipeline.explain` runs per method, and what max-sensitivity and the
sanity check re-run: the settings come from the :class:`~tig_batch.pipeline.ExplainConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, Manifold
from tig_batch.engine import (
    Attribution,
    SearchResult,
    TangentSpace,
    blur_integrated_gradients,
    expected_gradients,
    gradient,
    guided_integrated_gradients,
    input_x_gradient,
    integrated_gradients,
    make_baselines,
    optimal_baselines,
    smoothgrad,
    tangent_space,
)

if TYPE_CHECKING:
    from tig_batch.pipeline import ExplainConfig

IG_METHODS = ("tangential", "zero", "uniform", "gaussian", "maxdist", "blur")
GRADIENT_METHODS = ("gradient", "smoothgrad", "inputxgrad")
#: The paper's nine methods: ``explain``'s default.
PAPER_METHODS = IG_METHODS + GRADIENT_METHODS
#: Path methods beyond the paper (Guided IG, Blur IG, Expected Gradients): opt-in, since
#: together they cost about eight 50-node IGs per image (docs/performance.md).
PATH_METHODS = ("guidedig", "blurig", "expectedgrad")
METHODS = PAPER_METHODS + PATH_METHODS
#: Methods with a convergence delta and an output gap (stored as ``delta/`` and
#: ``output_gap/``).
GAP_METHODS = IG_METHODS + PATH_METHODS


def explain_method(
    name: str,
    classifier: Classifier,
    manifold: Manifold,
    images: torch.Tensor,
    target: torch.Tensor,
    sample_ids: torch.Tensor,
    config: ExplainConfig,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    references: torch.Tensor | None = None,
    tangent: TangentSpace | None = None,
) -> tuple[Attribution, SearchResult | None]:
    """One method's explanation of a batch for resolved targets, with its settings from
    ``config``; and, for ``tangential``, the base-point search's result. ``tangent`` (the
    images' tangent space) is computed when the search needs it and is not given;
    ``references`` are Expected Gradients' reference images."""
    ibs = internal_batch_size
    if name == "tangential":
        tangent = tangent if tangent is not None else tangent_space(manifold, images, config.rtol)
        search = optimal_baselines(
            classifier, images, tangent, target, config.value_range, config.search,
            sample_ids, ibs, config.seed,
        )  # fmt: skip
        result = integrated_gradients(
            classifier, images, search.baselines, target, config.n_steps, config.method, ibs
        )
        return result, search
    if name in IG_METHODS:
        sigma = config.gaussian_sigma if name == "gaussian" else config.blur_sigma
        start = make_baselines(
            name, images, config.value_range, sigma=sigma, seed=config.seed,
            sample_ids=sample_ids,
        )  # fmt: skip
        result = integrated_gradients(
            classifier, images, start, target, config.n_steps, config.method, ibs
        )
    else:
        result = _other_method(
            name, classifier, images, target, sample_ids, config, ibs, references
        )
    return result, None


def _other_method(
    name: str,
    classifier: Classifier,
    images: torch.Tensor,
    target: torch.Tensor,
    sample_ids: torch.Tensor,
    config: ExplainConfig,
    ibs: int,
    references: torch.Tensor | None,
) -> Attribution:
    """The gradient explainers and the path methods beyond the paper."""
    if name == "gradient":
        return gradient(classifier, images, target, ibs)
    if name == "inputxgrad":
        return input_x_gradient(classifier, images, target, ibs)
    if name == "smoothgrad":
        return smoothgrad(
            classifier, images, target, config.smoothgrad_sigma, config.smoothgrad_samples,
            config.seed, sample_ids, ibs,
        )  # fmt: skip
    if name == "guidedig":
        start = make_baselines("zero", images, config.value_range)
        return guided_integrated_gradients(
            classifier, images, start, target, config.guidedig_n_steps, config.guidedig_fraction,
            config.guidedig_max_dist, ibs,
        )  # fmt: skip
    if name == "blurig":
        return blur_integrated_gradients(
            classifier,
            images,
            target,
            config.blurig_max_sigma,
            config.blurig_n_steps,
            internal_batch_size=ibs,
        )
    if name == "expectedgrad":
        if references is None:
            raise ValueError(NEEDS_REFERENCES)
        return expected_gradients(
            classifier, images, references, target, config.expectedgrad_samples, config.seed,
            sample_ids, ibs,
        )  # fmt: skip
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


NEEDS_REFERENCES = (
    "expectedgrad draws its base-points from reference images, and none were given: pass "
    "references (e.g. images of the training split)"
)
