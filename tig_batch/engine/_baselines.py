"""The common IG base-points, each clipped to the value range.

Random base-points draw each image's noise from its own generator, seeded by
``(seed, sample_id)``, so an image gets the same base-point whatever batch it arrives in.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch

BaselineKind = Literal["zero", "uniform", "gaussian", "maxdist", "blur"]
BASELINE_KINDS: tuple[str, ...] = get_args(BaselineKind)
ValueRange = tuple[float, float]

DEFAULT_GAUSSIAN_SIGMA = 0.5
DEFAULT_BLUR_SIGMA = 4.0


def seeded_noise(
    inputs: torch.Tensor,
    seed: int,
    sample_ids: torch.Tensor | None,
    draw: str,
) -> torch.Tensor:
    """Per-image standard ``normal`` or ``uniform`` noise, reproducible per ``(seed, id)``."""
    ids = torch.arange(inputs.shape[0]) if sample_ids is None else sample_ids.cpu()
    if ids.shape != (inputs.shape[0],):
        raise ValueError(f"sample_ids must have shape ({inputs.shape[0]},), got {tuple(ids.shape)}")
    noise = torch.empty(inputs.shape, dtype=torch.float64)
    for row, sample_id in zip(noise, ids.tolist(), strict=True):
        state = np.random.SeedSequence([seed, sample_id]).generate_state(2, np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        (row.normal_ if draw == "normal" else row.uniform_)(generator=generator)
    return noise.to(inputs.device, inputs.dtype)


def zero_baselines(inputs: torch.Tensor, value_range: ValueRange = (0.0, 1.0)) -> torch.Tensor:
    """``a = 0``, clipped to the range (so ``lo`` when ``lo > 0``)."""
    return torch.zeros_like(inputs).clamp_(*value_range)


def uniform_baselines(
    inputs: torch.Tensor,
    value_range: ValueRange = (0.0, 1.0),
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``a ~ U[lo, hi]^d``, seeded per image."""
    lo, hi = value_range
    return lo + (hi - lo) * seeded_noise(inputs, seed, sample_ids, "uniform")


def gaussian_baselines(
    inputs: torch.Tensor,
    value_range: ValueRange = (0.0, 1.0),
    sigma: float = DEFAULT_GAUSSIAN_SIGMA,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``a = clip(x + N(0, sigma^2))``, seeded per image."""
    noise = seeded_noise(inputs, seed, sample_ids, "normal")
    return (inputs + sigma * noise).clamp_(*value_range)


def maxdist_baselines(inputs: torch.Tensor, value_range: ValueRange = (0.0, 1.0)) -> torch.Tensor:
    """The point of the range farthest from ``x`` in l2: ``hi`` where ``x < mid``, else ``lo``."""
    lo, hi = value_range
    return torch.where(inputs < (lo + hi) / 2, torch.full_like(inputs, hi), lo)


def blur_baselines(
    inputs: torch.Tensor,
    value_range: ValueRange = (0.0, 1.0),
    sigma: float = DEFAULT_BLUR_SIGMA,
) -> torch.Tensor:
    """Gaussian blur of each channel (``sigma`` in pixels, reflected borders), clipped."""
    if inputs.dim() != 4:
        raise ValueError(f"blur needs images (B, C, H, W), got shape {tuple(inputs.shape)}")
    if sigma <= 0:
        return inputs.clone().clamp_(*value_range)
    channels, height, width = inputs.shape[1:]
    radius = min(math.ceil(3 * sigma), height - 1, width - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    images = inputs.reshape(-1, 1, height, width)
    padded = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    blurred = torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1))
    return blurred.view(-1, channels, height, width).clamp_(*value_range)


def make_baselines(
    kind: BaselineKind,
    inputs: torch.Tensor,
    value_range: ValueRange = (0.0, 1.0),
    *,
    sigma: float | None = None,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Base-points of one named kind for a batch (the tangential one is :func:`optimal_baselines`).

    ``sigma`` is the Gaussian noise level (default 0.5) or the blur width in pixels (default 4).
    """
    if kind == "zero":
        return zero_baselines(inputs, value_range)
    if kind == "uniform":
        return uniform_baselines(inputs, value_range, seed, sample_ids)
    if kind == "gaussian":
        sigma = DEFAULT_GAUSSIAN_SIGMA if sigma is None else sigma
        return gaussian_baselines(inputs, value_range, sigma, seed, sample_ids)
    if kind == "maxdist":
        return maxdist_baselines(inputs, value_range)
    if kind == "blur":
        return blur_baselines(inputs, value_range, DEFAULT_BLUR_SIGMA if sigma is None else sigma)
    raise ValueError(f"unknown base-point {kind!r}; choose one of {', '.join(BASELINE_KINDS)}")


def user_baselines(
    baselines: torch.Tensor | float, inputs: torch.Tensor, value_range: ValueRange = (0.0, 1.0)
) -> torch.Tensor:
    """A user's base-points: a scalar, one image, or one per input; broadcast and clipped."""
    baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    try:
        expanded = baselines.expand_as(inputs)
    except RuntimeError:
        raise ValueError(
            f"baselines of shape {tuple(baselines.shape)} do not broadcast to inputs "
            f"{tuple(inputs.shape)}"
        ) from None
    return expanded.clamp(*value_range)


def stream_seed(seed: int, stream: int) -> int:
    """A seed of its own for one consumer of random numbers (a metric, a method), derived from
    the user's ``seed``, so that two consumers given the same seed and sample ids do not draw
    the same noise (``seeded_noise`` seeds by ``(seed, id)``; this puts ``stream`` in the
    seed's upper 32 bits, which the plain seeds of the base-points and SmoothGrad leave 0)."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return seed + (stream << 32)
