"""One frozen-path ascent step on the alignment ``mu`` with respect to the base-point.

With the mean path gradient ``G`` held fixed, ``dv/da = -diag(G)``, so
``dmu/da = -G * (U U^T v / (||v|| ||U^T v||) - mu v / ||v||^2)``. The step moves ``a`` along
that gradient (normalised to unit l2 length by default, so the learning rate is the step's
length in input units) and clips to the value range.

Memory traffic: reads ``v``, ``G``, ``a`` (3*B*d) and ``U`` (B*d*r), writes ``a`` (B*d).
"""

from __future__ import annotations

import torch


def mu_cotangent_ref(
    attributions: torch.Tensor, basis: torch.Tensor, projection: torch.Tensor
) -> torch.Tensor:
    """``dmu/dv = U U^T v / (||v|| ||U^T v||) - mu v / ||v||^2`` (B, d); zero where undefined.

    ``mu`` is not differentiable where ``v`` or ``U^T v`` vanishes; the ascent then stays put.
    """
    v_norm = torch.linalg.vector_norm(attributions, dim=1, keepdim=True)
    p_norm = torch.linalg.vector_norm(projection, dim=1, keepdim=True)
    tangent_part = torch.bmm(basis, projection[:, :, None]).squeeze(2) / (v_norm * p_norm)
    cotangent = tangent_part - (p_norm / v_norm) * attributions / v_norm**2
    defined = (v_norm > 0) & (p_norm > 0)
    return torch.where(defined, cotangent, torch.zeros_like(cotangent))


def mu_gradient_ref(
    attributions: torch.Tensor,
    mean_gradient: torch.Tensor,
    basis: torch.Tensor,
    projection: torch.Tensor,
) -> torch.Tensor:
    """Frozen-path ``dmu/da = -G * dmu/dv`` (B, d)."""
    return -mean_gradient * mu_cotangent_ref(attributions, basis, projection)


def ascent_step_ref(
    baselines: torch.Tensor,
    grad: torch.Tensor,
    lr: torch.Tensor | float,
    value_range: tuple[float, float],
    normalize: bool = True,
) -> torch.Tensor:
    """``clip(a + lr * grad / ||grad||)`` per image (``lr`` a float or (B,)); zero grad stays."""
    if normalize:
        g_norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
        grad = grad / torch.where(g_norm > 0, g_norm, torch.ones_like(g_norm))
    lr = torch.as_tensor(lr, dtype=grad.dtype, device=grad.device).reshape(-1, 1)
    return (baselines + lr * grad).clamp_(*value_range)


def tangential_step_ref(
    attributions: torch.Tensor,
    mean_gradient: torch.Tensor,
    basis: torch.Tensor,
    projection: torch.Tensor,
    baselines: torch.Tensor,
    lr: torch.Tensor | float,
    value_range: tuple[float, float],
    normalize: bool = True,
) -> torch.Tensor:
    """Torch twin of the fused step: all vectors flattened to (B, d), ``basis`` (B, d, r)."""
    grad = mu_gradient_ref(attributions, mean_gradient, basis, projection)
    return ascent_step_ref(baselines, grad, lr, value_range, normalize)
