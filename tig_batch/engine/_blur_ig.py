"""Blur Integrated Gradients (Xu et al., CVPR 2020), batched over images and steps.

The path runs through Gaussian blurs of the image, from the most blurred (``max_sigma``) to
the image itself, so it adds information scale by scale instead of fading in from a
base-point. Blur, steps and derivative follow PAIR ``saliency``'s ``BlurIG``:

- the blur is ``scipy.ndimage.gaussian_filter`` over height and width (not channels) with
  zero ("constant") borders and a kernel truncated at ``int(4 sigma + 0.5)`` pixels,
  normalised over its full width; here it is a product of two banded matrices,
  ``B_sigma(x) = A_H x A_W^T``, so one contraction blurs every image at every step;
- ``sigma_i = i max_sigma / n_steps`` (or ``sqrt(i max_sigma / n_steps)``), ``i = 0..n_steps``;
- ``d x / d sigma`` is the forward difference ``(B_{sigma + grad_step}(x) - B_sigma(x)) /
  grad_step``;
- ``BlurIG(x) = -sum_{i < n_steps} (sigma_{i+1} - sigma_i) d x/d sigma (sigma_i) *
  grad f_c(B_{sigma_i}(x))``, a left Riemann sum, whose total approaches
  ``f_c(x) - f_c(B_{max_sigma}(x))``.
"""

from __future__ import annotations

import math

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

_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def blur_matrices(size: int, sigmas: torch.Tensor) -> torch.Tensor:
    """(S, size, size): row ``i`` of matrix ``s`` holds the Gaussian weights that blurring
    with ``sigmas[s]`` gives pixel ``i``, zero borders, as scipy computes them (float64)."""
    offsets = torch.arange(size, dtype=torch.float64)
    distance = offsets[:, None] - offsets[None, :]
    matrices = []
    for sigma in sigmas.tolist():
        if sigma == 0:
            matrices.append(torch.eye(size, dtype=torch.float64))
            continue
        radius = int(_TRUNCATE * sigma + 0.5)
        support = torch.arange(-radius, radius + 1, dtype=torch.float64)
        norm = torch.exp(-0.5 / (sigma * sigma) * support**2).sum()
        weights = torch.exp(-0.5 / (sigma * sigma) * distance**2) / norm
        matrices.append(torch.where(distance.abs() <= radius, weights, 0.0))
    return torch.stack(matrices)


def gaussian_blurs(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each image (B, C, H, W) blurred with each sigma: (B, S, C, H, W), in float64."""
    rows = blur_matrices(images.shape[2], sigmas).to(images.device)
    columns = blur_matrices(images.shape[3], sigmas).to(images.device)
    return torch.einsum("shi,bcij,swj->bschw", rows, images.double(), columns)


def blur_sigmas(max_sigma: float, n_steps: int, sqrt: bool = False) -> torch.Tensor:
    """``sigma_0 .. sigma_{n_steps}`` from 0 to ``max_sigma``, evenly or on a square-root scale."""
    levels = [i * max_sigma / n_steps for i in range(n_steps + 1)]
    return torch.tensor([math.sqrt(s) for s in levels] if sqrt else levels, dtype=torch.float64)


def blur_integrated_gradients(
    model: Classifier,
    inputs: torch.Tensor,
    target: Target = None,
    max_sigma: float = 50.0,
    n_steps: int = 100,
    grad_step: float = 0.01,
    sqrt: bool = False,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Blur IG of ``f_c`` along the path from ``B_{max_sigma}(x)`` to ``x`` (see the module).

    Defaults are ``saliency``'s (``max_sigma`` 50 pixels, 100 steps, ``grad_step`` 0.01).
    ``output_gap`` is ``f_c(x) - f_c(B_{max_sigma}(x))`` and ``delta`` the attributions' sum
    minus it. Images go through in groups of ``internal_batch_size // n_steps`` (at least
    one), so the model sees at most ``internal_batch_size`` samples per call; blurs are
    computed in float64 and the model sees them in the inputs' dtype.
    """
    if inputs.dim() != 4:
        raise ValueError(f"Blur IG needs images (B, C, H, W), got shape {tuple(inputs.shape)}")
    if n_steps < 1 or max_sigma <= 0 or grad_step <= 0:
        raise ValueError(
            f"need n_steps >= 1, max_sigma > 0 and grad_step > 0, got {n_steps}, {max_sigma}, "
            f"{grad_step}"
        )
    target = resolve_target(model, inputs, target)
    sigmas = blur_sigmas(max_sigma, n_steps, sqrt)
    widths = (sigmas[1:] - sigmas[:-1]).to(inputs.device)
    parts = []
    for rows in image_groups(inputs.shape[0], n_steps, internal_batch_size):
        path = gaussian_blurs(inputs[rows], sigmas[:-1])
        slope = (gaussian_blurs(inputs[rows], sigmas[:-1] + grad_step) - path) / grad_step
        points = path.flatten(0, 1).to(inputs.dtype)
        grads = input_gradients(
            model, points, target[rows].repeat_interleave(n_steps), internal_batch_size
        )
        grads = grads.view_as(path).double()
        parts.append(-torch.einsum("s,bschw->bchw", widths, slope * grads))
    attributions = torch.cat(parts).to(inputs.dtype)
    blurred = gaussian_blurs(inputs, sigmas[-1:])[:, 0].to(inputs.dtype)
    gap = explained_outputs(model, inputs, target) - explained_outputs(model, blurred, target)
    return Attribution(attributions, target, attributions.flatten(1).sum(1) - gap, gap)
