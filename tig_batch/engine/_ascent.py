"""The gradient of the alignment with respect to the base-point, and one ascent step on it.

With the mean path gradient ``G`` held fixed, ``dv/da = -diag(G)``, so
``dmu/da = -G * (U U^T v / (||v|| ||U^T v||) - mu v / ||v||^2)``. The search's ``ascent``
and ``surrogate`` steps use these; the fused kernel ``kernels/tangential_step.py`` computes
the same step, and its torch twin is built from these functions. Leaf module: torch only.
"""

from __future__ import annotations

import torch


def mu_cotangent(
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


def mu_gradient(
    attributions: torch.Tensor,
    mean_gradient: torch.Tensor,
    basis: torch.Tensor,
    projection: torch.Tensor,
) -> torch.Tensor:
    """Frozen-path ``dmu/da = -G * dmu/dv`` (B, d)."""
    return -mean_gradient * mu_cotangent(attributions, basis, projection)


def ascent_step(
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
