"""Gradient explainers, which need no base-point: Gradient, SmoothGrad, Input x Gradient."""

from __future__ import annotations

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier
from tig_batch.engine._baselines import seeded_noise
from tig_batch.engine._ig import (
    Attribution,
    Target,
    input_gradients,
    resolve_target,
)


def gradient(
    model: Classifier,
    inputs: torch.Tensor,
    target: Target = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """``grad f_c(x)``."""
    target = resolve_target(model, inputs, target)
    return Attribution(input_gradients(model, inputs, target, internal_batch_size), target)


def input_x_gradient(
    model: Classifier,
    inputs: torch.Tensor,
    target: Target = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """``x * grad f_c(x)``."""
    target = resolve_target(model, inputs, target)
    return Attribution(inputs * input_gradients(model, inputs, target, internal_batch_size), target)


def smoothgrad(
    model: Classifier,
    inputs: torch.Tensor,
    target: Target = None,
    sigma: float = 0.02,
    n_samples: int = 25,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """``(1/m) sum_j grad f_c(x + e_j)``, ``e_j ~ N(0, sigma^2)`` unclipped, seeded per image.

    The target is resolved on the clean image, so every noisy copy explains the same class.
    Image ``i``'s ``j``-th noise is drawn from seed ``(seed, m * id_i + j)``.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    target = resolve_target(model, inputs, target)
    ids = torch.arange(inputs.shape[0]) if sample_ids is None else sample_ids.cpu()
    group = max(1, internal_batch_size // n_samples)  # noisy copies held at once stay bounded
    parts = []
    for start in range(0, inputs.shape[0], group):
        rows = slice(start, start + group)
        noise_ids = (ids[rows, None] * n_samples + torch.arange(n_samples)).flatten()
        noisy = inputs[rows].repeat_interleave(n_samples, dim=0)
        noisy = noisy + sigma * seeded_noise(noisy, seed, noise_ids, "normal")
        grads = input_gradients(
            model, noisy, target[rows].repeat_interleave(n_samples), internal_batch_size
        )
        parts.append(grads.view(-1, n_samples, *inputs.shape[1:]).mean(1))
    return Attribution(torch.cat(parts), target)
