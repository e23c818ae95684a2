"""Deletion and insertion (Petsiuk et al. 2018): does removing the pixels an explanation ranks
first destroy the output, and does inserting them first restore it? Batched over images and
steps, by forward passes only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier
from tig_batch.engine._baselines import (
    DEFAULT_BLUR_SIGMA,
    ValueRange,
    blur_baselines,
    zero_baselines,
)
from tig_batch.engine._ig import (
    Target,
    forward_outputs,
    image_groups,
    resolve_target,
)
from tig_batch.engine._metrics import check_attributions

Replacement = Literal["zero", "blur"]
Normalization = Literal["output", "gap"]
DEFAULT_FLIP_STEPS = 20


@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves per image, and their areas.

    ``fractions`` (n_steps + 1,): the share of pixels removed (deletion) or inserted
    (insertion) at each point, from 0 to 1. ``deletion`` and ``insertion`` (B, n_steps + 1):
    the normalised explained output there; ``deletion_auc`` and ``insertion_auc`` (B,): their
    trapezoid areas over [0, 1] (low deletion and high insertion mean faithful).
    ``outputs`` (B,): ``f_c(x)``; ``replacement_outputs`` (B,): ``f_c`` of the image with every
    pixel replaced. ``undefined`` (B,): the normaliser is not positive, so curves and areas
    are NaN there (the raw outputs above still let a reader re-normalise).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: torch.Tensor
    insertion_auc: torch.Tensor
    outputs: torch.Tensor
    replacement_outputs: torch.Tensor
    undefined: torch.Tensor


def pixel_order(attributions: torch.Tensor) -> torch.Tensor:
    """Pixel indices (B, H*W) most relevant first: by attribution summed over channels,
    descending, ties in row-major order (a stable sort), so the order is reproducible."""
    scores = attributions.sum(1).flatten(1)
    return scores.sort(dim=1, descending=True, stable=True).indices


def flip_fractions(n_pixels: int, n_steps: int) -> torch.Tensor:
    """Pixels changed at each of the ``n_steps + 1`` points: ``floor(k * n_pixels / n_steps)``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return torch.arange(n_steps + 1) * n_pixels // n_steps


def replacement_images(
    inputs: torch.Tensor,
    replacement: Replacement | torch.Tensor,
    value_range: ValueRange,
    blur_sigma: float,
) -> torch.Tensor:
    """What a removed pixel becomes: the zero base-point (``lo``), the blurred image, or given."""
    if isinstance(replacement, torch.Tensor):
        return replacement.to(inputs.device, inputs.dtype).expand_as(inputs)
    if replacement == "zero":
        return zero_baselines(inputs, value_range)
    if replacement == "blur":
        return blur_baselines(inputs, value_range, blur_sigma)
    raise ValueError(f"replacement must be 'zero', 'blur' or a tensor, got {replacement!r}")


def deletion_insertion(
    model: Classifier,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: Target = None,
    n_steps: int = DEFAULT_FLIP_STEPS,
    replacement: Replacement | torch.Tensor = "zero",
    normalize: Normalization = "output",
    value_range: ValueRange = (0.0, 1.0),
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> DeletionInsertion:
    """Deletion and insertion curves and AUCs per image, most relevant pixels first.

    Pixels are ranked by :func:`pixel_order`; at point ``k`` the first
    ``floor(k * H*W / n_steps)`` pixels (all their channels) are replaced (deletion, starting
    from ``x``) or restored (insertion, starting from the replacement). ``replacement`` is
    ``zero`` (the zero base-point, ``lo``), ``blur`` (:func:`make_baselines`' blur,
    ``blur_sigma`` pixels) or an image or batch of images. ``normalize``:

    - ``output``: ``f_c(x_k) / f_c(x)`` (Petsiuk et al.); undefined where ``f_c(x) <= 0``,
      which a logit can be;
    - ``gap``: ``(f_c(x_k) - f_c(r)) / (f_c(x) - f_c(r))``, the share of the output change
      between replacement ``r`` and image; undefined where that change is not positive.

    Undefined images get NaN curves and areas and are flagged, never a number of the wrong
    sign. ``2 (n_steps + 1)`` forward passes per image, ``internal_batch_size`` per call.
    """
    check_attributions(inputs, attributions)
    if normalize not in ("output", "gap"):
        raise ValueError(f"normalize must be 'output' or 'gap', got {normalize!r}")
    target = resolve_target(model, inputs, target)
    reference = replacement_images(inputs, replacement, value_range, blur_sigma)
    batch, _, height, width = inputs.shape
    counts = flip_fractions(height * width, n_steps).to(inputs.device)
    order = pixel_order(attributions)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(height * width, device=inputs.device).expand_as(order))
    points = n_steps + 1
    curves = []
    for rows in image_groups(batch, 2 * points, internal_batch_size):
        changed = (ranks[rows, None, :] < counts[None, :, None]).view(-1, points, 1, height, width)
        image, other = inputs[rows, None], reference[rows, None]
        deleted, inserted = torch.where(changed, other, image), torch.where(changed, image, other)
        path = torch.cat([deleted, inserted], 1)
        values = forward_outputs(
            model, path.flatten(0, 1), target[rows].repeat_interleave(2 * points),
            internal_batch_size,
        )  # fmt: skip
        curves.append(values.view(-1, 2, points))
    raw = torch.cat(curves)
    return _normalised(raw, counts / (height * width), normalize)


def _normalised(
    raw: torch.Tensor, fractions: torch.Tensor, normalize: Normalization
) -> DeletionInsertion:
    """Curves normalised per image, NaN where the normaliser is not positive, and their areas."""
    outputs, replaced = raw[:, 0, 0], raw[:, 0, -1]
    offset = torch.zeros_like(outputs) if normalize == "output" else replaced
    scale = outputs - offset
    undefined = ~(scale > 0)
    scale = torch.where(undefined, torch.full_like(scale, float("nan")), scale)
    curves = (raw - offset[:, None, None]) / scale[:, None, None]
    fractions = fractions.to(raw.dtype)
    areas = torch.trapezoid(curves, fractions, dim=2)
    return DeletionInsertion(
        fractions=fractions,
        deletion=curves[:, 0],
        insertion=curves[:, 1],
        deletion_auc=areas[:, 0],
        insertion_auc=areas[:, 1],
        outputs=outputs,
        replacement_outputs=replaced,
        undefined=undefined,
    )
