"""Expected Gradients (Erion et al., 2021), batched over images.

IG averaged over base-points drawn from the data: ``EG(x) = E_{r, t} [(x - r) * grad f_c(r +
t (x - r))]`` with ``r`` drawn uniformly from a reference set and ``t ~ U[0, 1]``, estimated
with ``n_samples`` draws per image, one gradient each (what ``shap``'s ``GradientExplainer``
computes). Draws are seeded per image, so an image gets the same estimate in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, call_logits, explained_value
from tig_batch.engine._baselines import seeded_noise, stream_seed
from tig_batch.engine._ig import (
    Attribution,
    Target,
    explained_outputs,
    image_groups,
    input_gradients,
    resolve_target,
)

_STREAM = 3


@dataclass(frozen=True)
class ReferenceDraws:
    """Per image and draw: the reference index (B, n) and the path position ``t`` (B, n)."""

    indices: torch.Tensor
    positions: torch.Tensor


def reference_draws(
    n_references: int,
    n_samples: int,
    batch: int,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> ReferenceDraws:
    """The draws :func:`expected_gradients` makes: image ``id``'s come from seed ``(seed, id)``
    on a stream of their own; index ``floor(u * n_references)`` and ``t = v`` for uniform
    ``u, v`` in [0, 1)."""
    if n_references < 1 or n_samples < 1:
        raise ValueError(f"need references and n_samples >= 1, got {n_references}, {n_samples}")
    carrier = torch.empty(batch, 2, n_samples, dtype=torch.float64)
    uniform = seeded_noise(carrier, stream_seed(seed, _STREAM), sample_ids, "uniform")
    indices = (uniform[:, 0] * n_references).long().clamp_(max=n_references - 1)
    return ReferenceDraws(indices, uniform[:, 1])


def expected_gradients(
    model: Classifier,
    inputs: torch.Tensor,
    references: torch.Tensor,
    target: Target = None,
    n_samples: int = 50,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Expected Gradients of ``f_c`` with base-points drawn from ``references`` (N, C, H, W).

    ``n_samples`` draws per image (:func:`reference_draws`), one gradient each: the cost of an
    ``n_samples``-node IG. ``output_gap`` is ``f_c(x) - mean_j f_c(r_j)`` over the image's
    drawn references and ``delta`` the attributions' sum minus it: zero in expectation, its
    spread is the estimator's Monte Carlo error. Images go through in groups of
    ``internal_batch_size // n_samples`` (at least one), so the model sees at most
    ``internal_batch_size`` samples per call.
    """
    if references.dim() != inputs.dim() or references.shape[1:] != inputs.shape[1:]:
        raise ValueError(
            f"references must be images shaped like the inputs' {tuple(inputs.shape[1:])}, "
            f"got {tuple(references.shape)}"
        )
    references = references.to(inputs.device, inputs.dtype)
    target = resolve_target(model, inputs, target)
    draws = reference_draws(len(references), n_samples, inputs.shape[0], seed, sample_ids)
    indices = draws.indices.to(inputs.device)
    positions = draws.positions.to(inputs.device, inputs.dtype)
    groups = image_groups(inputs.shape[0], n_samples, internal_batch_size)
    parts = []
    for rows in groups:
        drawn = references[indices[rows]]  # (b, n, C, H, W)
        step = inputs[rows, None] - drawn
        t = positions[rows].view(*positions[rows].shape, *[1] * (inputs.dim() - 1))
        points = (drawn + t * step).flatten(0, 1)
        grads = input_gradients(
            model, points, target[rows].repeat_interleave(n_samples), internal_batch_size
        )
        parts.append((step * grads.view_as(step)).mean(1))
    attributions = torch.cat(parts)
    gap = explained_outputs(model, inputs, target) - _drawn_outputs(
        model, references, indices, target, internal_batch_size
    )
    return Attribution(attributions, target, attributions.flatten(1).sum(1) - gap, gap)


def _drawn_outputs(
    model: Classifier,
    references: torch.Tensor,
    indices: torch.Tensor,
    target: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """``mean_j f_c(r_j)`` (B,) over each image's drawn references, each drawn reference's
    logits computed once."""
    unique, inverse = indices.unique(return_inverse=True)
    logits = torch.cat(
        [
            call_logits(model, references[unique[start : start + internal_batch_size]])
            for start in range(0, unique.numel(), internal_batch_size)
        ]
    )
    per_draw = logits[inverse.flatten()]
    values = explained_value(per_draw, target.repeat_interleave(indices.shape[1]), model.output)
    return values.view(indices.shape).mean(1)
