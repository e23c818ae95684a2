"""One frozen-path ascent step on the alignment ``mu`` with respect to the base-point.

With the mean path gradient ``G`` held fixed, ``dv/da = -diag(G)``, so
``dmu/da = -G * (U U^T v / (||v|| ||U^T v||) - mu v / ||v||^2)``. The step moves ``a`` along
that gradient (normalised to unit l2 length by default, so the learning rate is the step's
length in input units) and clips to the value range. The math is the search's
(``tig_batch/engine/_ascent.py``); the torch twin composes it, the kernel fuses it.

Memory traffic: reads ``v``, ``G``, ``a`` (3*B*d) and ``U`` (B*d*r), writes ``a`` (B*d).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from tig_batch.engine._ascent import ascent_step, mu_gradient
from tig_batch.kernels._triton import (
    accumulator,
    check_launch,
    interpreting,
    lazy_kernels,
    reduction_block,
    rows,
    tl_dtype,
    triton_cdiv,
)


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
    """Torch twin of the fused step: all vectors flattened to (B, d), ``basis`` (B, d, r).

    Like the kernel, it reads any of float16, float32 and float64, computes in at least
    float32, and returns the base-points in their own dtype.
    """
    tensors = (attributions, mean_gradient, basis, projection, baselines)
    compute = functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    v, mean, u, p, a = (t.to(compute) for t in tensors)
    grad = mu_gradient(v, mean, u, p)
    return ascent_step(a, grad, lr, value_range, normalize).to(baselines.dtype)


# --- Triton ------------------------------------------------------------------------------------
# ``tl`` is bound on the first launch (see ``_compiled``), so importing this module needs no
# Triton; the kernels below are plain Python until ``triton.jit`` decorates them.
#
# The step needs two norms over d before it can write: ||v|| (inside dmu/dv) and the norm of
# the gradient (for the normalised step). So three launches, each over (B, n_blocks)
# programs with per-block partial sums in between (deterministic, no atomics):
#   1. _sum_squares_kernel            reads v               -> partial ||v||^2
#   2. _tangential_step_kernel        reads U, U^T v, v, G  -> dmu/da (B, d), partial ||dmu/da||^2
#   3. _tangential_step_apply_kernel  reads dmu/da and a    -> clip(a + lr * step)
# U, the only large operand, is read once; the gradient makes one fp32 round trip.
tl: Any = None

#: Autotuned (BLOCK_R, num_warps) of _tangential_step_kernel; BLOCK_SIZE from
#: ``reduction_block``.
_CONFIGS = ((16, 4), (16, 8), (32, 4), (32, 8))


def _sum_squares_kernel(
    x_ptr,  # (B, d), rows at stride_xb, unit stride within a row
    part_ptr,  # out: (B, n_blocks) per-block sums of squares
    n_elements,  # d
    n_blocks,  # cdiv(d, BLOCK_SIZE)
    stride_xb,
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
    BLOCK_SIZE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs = pid_d * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    x = tl.load(x_ptr + pid_b * stride_xb + offs, mask=offs < n_elements, other=0.0)
    x = x.to(ACC_DTYPE)
    tl.store(part_ptr + pid_b * n_blocks + pid_d, tl.sum(x * x, axis=0))


def _tangential_step_kernel(
    v_ptr,  # attributions v (B, d), rows at stride_vb
    g_ptr,  # mean path gradient G (B, d), rows at stride_gb
    u_ptr,  # tangent basis U (B, d, r) at strides stride_ub, stride_ud, stride_ur
    p_ptr,  # projection U^T v (B, r), rows at stride_pb, unit stride within a row
    part_v_ptr,  # (B, n_blocks) partial ||v||^2 from _sum_squares_kernel
    grad_ptr,  # out: dmu/da (B, d), contiguous, ACC_DTYPE
    part_g_ptr,  # out: (B, n_blocks) partial ||dmu/da||^2
    n_elements,  # d
    rank,  # r
    n_blocks,  # cdiv(d, BLOCK_SIZE)
    stride_vb,
    stride_gb,
    stride_ub,
    stride_ud,
    stride_ur,
    stride_pb,
    ACC_DTYPE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,  # elements of d per program (fixed on the host)
    BLOCK_R: tl.constexpr,  # basis columns per inner step
    BLOCK_N: tl.constexpr,  # partial sums per inner step
):
    # dmu/da = -G * (U U^T v / (||v|| ||U^T v||) - mu v / ||v||^2)
    #        = -G * s * (U p - mu^2 v)  with p = U^T v, s = 1 / (||v|| ||p||), mu = ||p|| / ||v||;
    # zero where v or p vanishes (mu is not differentiable there).
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs = pid_d * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements

    v_sq_acc = tl.zeros((BLOCK_N,), dtype=ACC_DTYPE)
    for n0 in range(0, n_blocks, BLOCK_N):
        blocks = n0 + tl.arange(0, BLOCK_N)
        v_sq_acc += tl.load(
            part_v_ptr + pid_b * n_blocks + blocks, mask=blocks < n_blocks, other=0.0
        )
    v_sq = tl.sum(v_sq_acc, axis=0)

    up = tl.zeros((BLOCK_SIZE,), dtype=ACC_DTYPE)  # (U p) on this block
    p_sq_acc = tl.zeros((BLOCK_R,), dtype=ACC_DTYPE)
    u_rows = u_ptr + pid_b * stride_ub + offs[:, None] * stride_ud
    for r0 in range(0, rank, BLOCK_R):
        cols = r0 + tl.arange(0, BLOCK_R)
        col_mask = cols < rank
        p = tl.load(p_ptr + pid_b * stride_pb + cols, mask=col_mask, other=0.0).to(ACC_DTYPE)
        p_sq_acc += p * p
        u = tl.load(
            u_rows + cols[None, :] * stride_ur,
            mask=mask[:, None] & col_mask[None, :],
            other=0.0,
        ).to(ACC_DTYPE)
        up += tl.sum(u * p[None, :], axis=1)
    p_sq = tl.sum(p_sq_acc, axis=0)

    defined = (v_sq > 0) & (p_sq > 0)
    scale = tl.where(defined, 1.0 / tl.where(defined, tl.sqrt(v_sq) * tl.sqrt(p_sq), 1.0), 0.0)
    mu_sq = tl.where(defined, p_sq / tl.where(defined, v_sq, 1.0), 0.0)
    v = tl.load(v_ptr + pid_b * stride_vb + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    g = tl.load(g_ptr + pid_b * stride_gb + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    grad = -g * (scale * (up - mu_sq * v))  # zero outside the mask
    tl.store(grad_ptr + pid_b * n_elements + offs, grad, mask=mask)
    tl.store(part_g_ptr + pid_b * n_blocks + pid_d, tl.sum(grad * grad, axis=0))


def _tangential_step_apply_kernel(
    grad_ptr,  # dmu/da (B, d), contiguous, from _tangential_step_kernel
    a_ptr,  # baselines (B, d), rows at stride_ab
    lr_ptr,  # learning rate per image (B,), ACC_DTYPE
    bounds_ptr,  # (lo, hi) of the value range, ACC_DTYPE
    part_g_ptr,  # (B, n_blocks) partial ||dmu/da||^2
    out_ptr,  # out: new base-points (B, d), contiguous, in their own dtype
    n_elements,  # d
    n_blocks,  # cdiv(d, BLOCK_SIZE)
    stride_ab,
    ACC_DTYPE: tl.constexpr,
    NORMALIZE: tl.constexpr,  # divide the gradient by its l2 norm (zero stays zero)
    BLOCK_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs = pid_d * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    grad = tl.load(grad_ptr + pid_b * n_elements + offs, mask=mask, other=0.0)
    if NORMALIZE:
        g_sq_acc = tl.zeros((BLOCK_N,), dtype=ACC_DTYPE)
        for n0 in range(0, n_blocks, BLOCK_N):
            blocks = n0 + tl.arange(0, BLOCK_N)
            g_sq_acc += tl.load(
                part_g_ptr + pid_b * n_blocks + blocks, mask=blocks < n_blocks, other=0.0
            )
        g_norm = tl.sqrt(tl.sum(g_sq_acc, axis=0))
        grad = grad / tl.where(g_norm > 0, g_norm, 1.0)
    lr = tl.load(lr_ptr + pid_b)
    lo = tl.load(bounds_ptr)
    hi = tl.load(bounds_ptr + 1)
    a = tl.load(a_ptr + pid_b * stride_ab + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    new = tl.minimum(tl.maximum(a + lr * grad, lo), hi)
    tl.store(out_ptr + pid_b * n_elements + offs, new.to(out_ptr.dtype.element_ty), mask=mask)


@lazy_kernels
def _compiled() -> tuple[Any, Any, Any, dict[str, int]]:
    global tl
    import triton
    import triton.language as tl

    if interpreting():  # small blocks cross every boundary; one config, no benchmarking
        configs = [triton.Config({"BLOCK_R": 4}, num_warps=1)]
        block_n = 4
    else:
        configs = [
            triton.Config({"BLOCK_R": block_r}, num_warps=warps) for block_r, warps in _CONFIGS
        ]
        block_n = 64
    step = triton.autotune(configs, key=["n_elements", "rank"])(triton.jit(_tangential_step_kernel))
    sum_squares = triton.jit(_sum_squares_kernel)
    apply = triton.jit(_tangential_step_apply_kernel)
    return sum_squares, step, apply, {"BLOCK_N": block_n}


def tangential_step_triton(
    attributions: torch.Tensor,
    mean_gradient: torch.Tensor,
    basis: torch.Tensor,
    projection: torch.Tensor,
    baselines: torch.Tensor,
    lr: torch.Tensor | float,
    value_range: tuple[float, float],
    normalize: bool = True,
) -> torch.Tensor:
    """Fused Triton version of :func:`tangential_step_ref`: the new base-points (B, d).

    Same arguments and values; the result has the dtype of ``baselines`` (the twin follows
    torch's type promotion instead, which differs only for mixed dtypes). Reads float16,
    float32 or float64 and computes in float32 (float64 if any input is float64).
    """
    if attributions.dim() != 2:
        raise ValueError(f"attributions must be (B, d), got shape {tuple(attributions.shape)}")
    batch, d = attributions.shape
    if mean_gradient.shape != attributions.shape:
        raise ValueError(
            f"mean_gradient has shape {tuple(mean_gradient.shape)}, expected {(batch, d)}"
        )
    if basis.dim() != 3 or basis.shape[:2] != (batch, d):
        raise ValueError(f"basis has shape {tuple(basis.shape)}, expected ({batch}, {d}, r)")
    rank = basis.shape[2]
    if projection.shape != (batch, rank):
        raise ValueError(
            f"projection has shape {tuple(projection.shape)}, expected {(batch, rank)}"
        )
    if baselines.shape[:1] != (batch,) or baselines.numel() != batch * d:
        raise ValueError(f"baselines has shape {tuple(baselines.shape)}, expected {(batch, d)}")
    lo, hi = (float(bound) for bound in value_range)
    if not lo <= hi:
        raise ValueError(f"value_range must be (lo, hi) with lo <= hi, got {value_range}")
    device = check_launch(
        "tangential_step",
        attributions=attributions, mean_gradient=mean_gradient, basis=basis,
        projection=projection, baselines=baselines,
    )  # fmt: skip
    acc = accumulator(
        attributions.dtype, mean_gradient.dtype, basis.dtype, projection.dtype, baselines.dtype
    )
    lr_rows = torch.as_tensor(lr, dtype=acc, device=device).reshape(-1)
    if lr_rows.numel() not in (1, batch):
        raise ValueError(f"lr must be a float or have {batch} elements, got {lr_rows.numel()}")
    lr_rows = lr_rows.expand(batch).contiguous()
    out = torch.empty(batch, d, dtype=baselines.dtype, device=device)
    if out.numel() == 0:
        return out

    v, g = rows(attributions, batch, d), rows(mean_gradient, batch, d)
    a = rows(baselines, batch, d)
    p = rows(projection, batch, rank) if rank else projection.new_zeros(batch, 1)
    bounds = torch.tensor([lo, hi], dtype=acc, device=device)
    block = reduction_block(d)
    n_blocks = triton_cdiv(d, block)
    part_v = torch.empty(batch, n_blocks, dtype=acc, device=device)
    part_g = torch.empty(batch, n_blocks, dtype=acc, device=device)
    grad = torch.empty(batch, d, dtype=acc, device=device)
    sum_squares, step, apply, blocks = _compiled()
    acc_tl = tl_dtype(acc)
    grid = (batch, n_blocks)
    sum_squares[grid](v, part_v, d, n_blocks, v.stride(0), ACC_DTYPE=acc_tl, BLOCK_SIZE=block)
    step[grid](
        v, g, basis, p, part_v, grad, part_g,
        d, rank, n_blocks,
        v.stride(0), g.stride(0), *basis.stride(), p.stride(0),
        ACC_DTYPE=acc_tl, BLOCK_SIZE=block, **blocks,
    )  # fmt: skip
    apply[grid](
        grad, a, lr_rows, bounds, part_g, out,
        d, n_blocks, a.stride(0),
        ACC_DTYPE=acc_tl, NORMALIZE=bool(normalize), BLOCK_SIZE=block, **blocks,
    )  # fmt: skip
    return out
