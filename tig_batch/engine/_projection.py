"""What one IG evaluation yields: the engine's central result, shared with the kernels.

The IG quadrature and the tangent projection of its attribution are computed in one fused
pass (``kernels/ig_accumulate_project.py`` and its torch twin), and the base-point search
steps from all of it. No torch beyond the tensors; no imports from the rest of the engine,
so the kernels can return it without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IGProjection:
    """What one IG evaluation yields per image; vectors are flattened to (B, d)."""

    mean_gradient: torch.Tensor  # G (B, d)
    attributions: torch.Tensor  # v = (x - a) * G (B, d)
    attribution_sum: torch.Tensor  # sum_i v_i (B,)
    norm: torch.Tensor  # ||v|| (B,)
    projection: torch.Tensor | None  # U^T v (B, r); None without a basis
    alignment: torch.Tensor | None  # mu (B,), NaN where v = 0; None without a basis
