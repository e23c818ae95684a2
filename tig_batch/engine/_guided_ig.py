"""Guided Integrated Gradients (Kapishnikov et al., CVPR 2021), batched over images.

The path from base-point to input is chosen as it is walked: at each of ``n_steps`` steps the
features with the smallest ``|gradient|`` move first, so the path avoids regions where the
output is steep and noisy. The algorithm follows PAIR ``saliency``'s ``GuidedIG`` step by step
(its ``fraction`` and ``max_dist``), vectorised: every image of a group takes its step with one
shared model call, and images whose inner loop has finished wait, masked, for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier
from tig_batch.engine._ig import (
    Attribution,
    Target,
    explained_outputs,
    image_groups,
    input_gradients,
    resolve_target,
)

_CLOSE = 1e-9  # saliency's EPSILON: the L1 target counts as reached within this (math.isclose)


def guided_integrated_gradients(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor | float = 0.0,
    target: Target = None,
    n_steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Guided IG of ``f_c`` from each base-point to its image.

    Step ``k`` of ``n_steps`` (one gradient per image) cuts the L1 distance to the input to
    ``(1 - k/n_steps)`` of the total by moving, repeatedly, the ``fraction`` of features with
    the smallest ``|gradient|`` toward the input, each feature kept within ``max_dist`` (a share
    of the straight path, in ``[0, 1]``; 0 is IG on the straight line, 1 any path in the box
    between base-point and input) of the straight path's position. The attribution adds up
    ``(change of x) * gradient``, a left Riemann sum along that path, so ``delta`` falls as
    ``n_steps`` grows. Defaults are ``saliency``'s (200 steps, 0.25, 0.02). The path is
    walked in float64, as ``saliency`` does, and the model sees it in the inputs' dtype;
    ``internal_batch_size`` images share a model call.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 < fraction <= 1 or not 0 <= max_dist <= 1:
        raise ValueError(
            f"need 0 < fraction <= 1 and 0 <= max_dist <= 1, got {fraction} and {max_dist}"
        )
    baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    baselines = baselines.expand_as(inputs)
    target = resolve_target(model, inputs, target)
    parts = []
    for rows in image_groups(inputs.shape[0], 1, internal_batch_size):

        def gradient(x: torch.Tensor, rows: slice = rows) -> torch.Tensor:
            point = x.view(-1, *inputs.shape[1:]).to(inputs.dtype)
            return input_gradients(model, point, target[rows], internal_batch_size).flatten(1)

        start, end = baselines[rows].flatten(1).double(), inputs[rows].flatten(1).double()
        segment = _Segment(start, end, math.floor((end.shape[1] - 1) * fraction))
        parts.append(_walk(gradient, segment, n_steps, max_dist))
    attributions = torch.cat(parts).view_as(inputs).to(inputs.dtype)
    gap = explained_outputs(model, inputs, target) - explained_outputs(model, baselines, target)
    return Attribution(attributions, target, attributions.flatten(1).sum(1) - gap, gap)


@dataclass(frozen=True)
class _Segment:
    """A group's straight segments from base-points to inputs, (b, d) float64."""

    start: torch.Tensor
    end: torch.Tensor
    quantile_index: int  # numpy's "lower" quantile of d values: floor((d - 1) * fraction)

    @property
    def span(self) -> torch.Tensor:
        return self.end - self.start

    def at(self, alpha: float) -> torch.Tensor:
        return self.start + self.span * alpha


def _walk(
    gradient: Callable[[torch.Tensor], torch.Tensor],
    segment: _Segment,
    n_steps: int,
    max_dist: float,
) -> torch.Tensor:
    """Walk every image's guided path; return the attributions (b, d)."""
    x = segment.start.clone()
    total = segment.span.abs().sum(1)
    attributions = torch.zeros_like(x)
    for step in range(n_steps):
        alpha = (step + 1.0) / n_steps
        grad = gradient(x).double()
        moved = _step(x, grad, segment, total, alpha, max_dist, 1 - (step + 1) / n_steps)
        attributions += (moved - x) * grad
        x = moved
    return attributions


def _step(
    x: torch.Tensor,
    grad: torch.Tensor,
    segment: _Segment,
    total: torch.Tensor,
    alpha: float,
    max_dist: float,
    remaining: float,
) -> torch.Tensor:
    """One step: bring each image's L1 distance to its input down to ``remaining * total``.

    Repeatedly: features fallen behind ``alpha - max_dist`` catch up; then the ``fraction``
    with the smallest ``|grad|`` (among those not yet at ``alpha + max_dist``) move toward it,
    all the way if that is not enough, else just far enough. Only the sum of the changes
    times ``grad`` enters the attribution, so the step returns the new point.
    """
    alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = segment.at(alpha_min), segment.at(alpha_max)
    span = segment.span
    l1_target = total * remaining
    ranking = grad.clone()  # a feature that reaches x_max leaves the ranking (|g| set to inf)
    active = total != 0  # an input equal to its base-point keeps zero attribution
    while active.any():
        position = torch.where(span != 0, (x - segment.start) / span, alpha_max)
        x = torch.where(active[:, None] & (position < alpha_min), x_min, x)
        l1_current = (x - segment.end).abs().sum(1)
        tolerance = torch.clamp(_CLOSE * torch.maximum(l1_target, l1_current), min=_CLOSE)
        going = active & ((l1_target - l1_current).abs() > tolerance)
        ranking = torch.where(going[:, None] & (x == x_max), torch.inf, ranking)
        magnitude = ranking.abs()
        threshold = magnitude.kthvalue(segment.quantile_index + 1, dim=1).values
        chosen = going[:, None] & (magnitude <= threshold[:, None]) & (ranking != torch.inf)
        l1_chosen = ((x - x_max).abs() * chosen).sum(1)
        gamma = torch.where(l1_chosen > 0, (l1_current - l1_target) / l1_chosen, torch.inf)
        full = gamma > 1.0
        partial = x + (x_max - x) * gamma[:, None]
        x = torch.where(chosen, torch.where(full[:, None], x_max, partial), x)
        # an image with no selectable feature left cannot move further in this step
        active = going & full & (l1_chosen > 0)
    return x
