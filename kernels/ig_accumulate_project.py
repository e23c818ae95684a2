"""Accumulate the IG quadrature and project the attribution onto the tangent space, fused.

From the path gradients ``g`` (B*K, d), the weights ``w`` (K), ``x``, ``a`` (B, d) and the
tangent basis ``U`` (B, d, r), one pass computes the mean path gradient
``G = sum_k w_k g_k``, the attribution ``v = (x - a) * G``, its sum (for the convergence
delta), ``U^T v``, ``||v||`` and the alignment ``mu = ||U^T v|| / ||v||``.

Memory traffic: reads ``g`` (B*K*d), ``x``, ``a`` (2*B*d) and ``U`` (B*d*r) once, writes
``G`` and ``v`` (2*B*d). Done as torch ops, ``v`` is written and read back for each reduction.
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


def _check(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    basis: torch.Tensor | None,
) -> tuple[int, int, int]:
    batch, n_steps = inputs.shape[0], weights.numel()
    d = inputs[0].numel()
    if baselines.shape != inputs.shape:
        raise ValueError(f"baselines {tuple(baselines.shape)} != inputs {tuple(inputs.shape)}")
    if grads.shape[0] != batch * n_steps or grads[0].numel() != d:
        raise ValueError(
            f"grads has shape {tuple(grads.shape)}, expected ({batch * n_steps}, ...) with "
            f"{d} elements per row"
        )
    if basis is not None and (basis.dim() != 3 or basis.shape[:2] != (batch, d)):
        raise ValueError(f"basis has shape {tuple(basis.shape)}, expected ({batch}, {d}, r)")
    return batch, n_steps, d


def ig_accumulate_project_ref(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    basis: torch.Tensor | None = None,
) -> IGProjection:
    """Torch twin; accumulates in float32 (float64 for float64 inputs)."""
    batch, n_steps, d = _check(grads, weights, inputs, baselines, basis)
    acc = torch.promote_types(inputs.dtype, torch.float32)
    g = grads.reshape(batch, n_steps, d).to(acc)
    mean_gradient = torch.einsum("bkd,k->bd", g, weights.to(acc))
    v = (inputs.reshape(batch, d).to(acc) - baselines.reshape(batch, d).to(acc)) * mean_gradient
    norm = torch.linalg.vector_norm(v, dim=1)
    projection = alignment = None
    if basis is not None:
        projection = torch.bmm(v[:, None, :], basis.to(acc)).squeeze(1)
        alignment = torch.linalg.vector_norm(projection, dim=1) / norm
    return IGProjection(mean_gradient, v, v.sum(1), norm, projection, alignment)
