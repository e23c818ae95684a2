"""Accumulate the IG quadrature and project the attribution onto the tangent space, fused.

From the path gradients ``g`` (B*K, d), the weights ``w`` (K), ``x``, ``a`` (B, d) and the
tangent basis ``U`` (B, d, r), one pass computes the mean path gradient
``G = sum_k w_k g_k``, the attribution ``v = (x - a) * G``, its sum (for the convergence
delta), ``U^T v``, ``||v||`` and the alignment ``mu = ||U^T v|| / ||v||``.

Memory traffic: reads ``g`` (B*K*d), ``x``, ``a`` (2*B*d) and ``U`` (B*d*r) once, writes
``G`` and ``v`` (2*B*d). Done as torch ops, ``v`` is written and read back for each reduction.
"""

from __future__ import annotations

from typing import Any

import torch

from tig_batch.engine._projection import IGProjection
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


# --- Triton ------------------------------------------------------------------------------------
# ``tl`` is bound on the first launch (see ``_compiled``), so importing this module needs no
# Triton; the kernels below are plain Python until ``triton.jit`` decorates them.
tl: Any = None

#: Autotuned (BLOCK_R, num_warps); BLOCK_SIZE comes from ``reduction_block``. Wider basis
#: slabs (BLOCK_R = 64) spill registers at BLOCK_SIZE = 256 (ptxas, sm_90).
_CONFIGS = ((16, 4), (16, 8), (32, 4), (32, 8))


def _ig_accumulate_project_kernel(
    g_ptr,  # path gradients (B*K, d), row b*K + k at stride_gb
    w_ptr,  # quadrature weights (K,)
    x_ptr,  # inputs (B, d), rows at stride_xb
    a_ptr,  # baselines (B, d), rows at stride_ab
    u_ptr,  # tangent basis (B, d, r) at strides stride_ub, stride_ud, stride_ur (if HAS_BASIS)
    mean_ptr,  # out: mean path gradient G (B, d), contiguous, ACC_DTYPE
    v_ptr,  # out: attribution v (B, d), contiguous, ACC_DTYPE
    part_ptr,  # out: partial sums (B, n_blocks, 2 + r): sum v, sum v^2, then U^T v, per block
    n_elements,  # d
    n_nodes,  # K
    rank,  # r (0 without a basis)
    n_blocks,  # cdiv(d, BLOCK_SIZE): programs per image
    stride_gb,
    stride_xb,
    stride_ab,
    stride_ub,
    stride_ud,
    stride_ur,
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
    HAS_BASIS: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,  # elements of d per program (fixed on the host)
    BLOCK_R: tl.constexpr,  # basis columns per inner step
):
    # Grid (B, n_blocks). Each program reads its block of the K gradient rows, x, a and the
    # (BLOCK_SIZE, r) slab of U exactly once, writes G and v for the block, and leaves its
    # share of every reduction over d in `part`; `_ig_finish_kernel` adds the shares up in a
    # fixed order (deterministic, no atomics).
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs = pid_d * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements

    mean = tl.zeros((BLOCK_SIZE,), dtype=ACC_DTYPE)
    g_row = g_ptr + pid_b * n_nodes * stride_gb + offs
    for k in range(n_nodes):
        w = tl.load(w_ptr + k).to(ACC_DTYPE)
        g = tl.load(g_row + k * stride_gb, mask=mask, other=0.0).to(ACC_DTYPE)
        mean += w * g
    x = tl.load(x_ptr + pid_b * stride_xb + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    a = tl.load(a_ptr + pid_b * stride_ab + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    v = (x - a) * mean  # zero outside the mask
    tl.store(mean_ptr + pid_b * n_elements + offs, mean, mask=mask)
    tl.store(v_ptr + pid_b * n_elements + offs, v, mask=mask)

    part = part_ptr + (pid_b * n_blocks + pid_d) * (2 + rank)
    tl.store(part, tl.sum(v, axis=0))
    tl.store(part + 1, tl.sum(v * v, axis=0))
    if HAS_BASIS:
        u_rows = u_ptr + pid_b * stride_ub + offs[:, None] * stride_ud
        for r0 in range(0, rank, BLOCK_R):
            cols = r0 + tl.arange(0, BLOCK_R)
            col_mask = cols < rank
            u = tl.load(
                u_rows + cols[None, :] * stride_ur,
                mask=mask[:, None] & col_mask[None, :],
                other=0.0,
            ).to(ACC_DTYPE)
            tl.store(part + 2 + cols, tl.sum(u * v[:, None], axis=0), mask=col_mask)


def _ig_finish_kernel(
    part_ptr,  # partial sums (B, n_blocks, 2 + r) from _ig_accumulate_project_kernel
    sum_ptr,  # out: sum_i v_i (B,)
    norm_ptr,  # out: ||v|| (B,)
    proj_ptr,  # out: U^T v (B, r), contiguous (if HAS_BASIS)
    mu_ptr,  # out: ||U^T v|| / ||v|| (B,), NaN where v = 0 (if HAS_BASIS)
    n_blocks,
    rank,
    ACC_DTYPE: tl.constexpr,
    HAS_BASIS: tl.constexpr,
    BLOCK_N: tl.constexpr,  # partial rows per step
    BLOCK_C: tl.constexpr,  # partial columns per step
):
    # Grid (B,): one program adds up one image's (n_blocks, 2 + r) partials, column block by
    # column block, then derives the norm and the alignment.
    pid_b = tl.program_id(0).to(tl.int64)
    n_cols = 2 + rank
    part = part_ptr + pid_b * n_blocks * n_cols
    total = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE).sum(axis=0)
    sum_sq = total
    proj_sq = total
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_mask = cols < n_cols
        acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
        for n0 in range(0, n_blocks, BLOCK_N):
            blocks = n0 + tl.arange(0, BLOCK_N)
            tile = tl.load(
                part + blocks[:, None] * n_cols + cols[None, :],
                mask=(blocks < n_blocks)[:, None] & col_mask[None, :],
                other=0.0,
            )
            acc += tl.sum(tile, axis=0)
        total += tl.sum(tl.where(cols == 0, acc, 0.0), axis=0)
        sum_sq += tl.sum(tl.where(cols == 1, acc, 0.0), axis=0)
        if HAS_BASIS:
            is_proj = (cols >= 2) & col_mask
            tl.store(proj_ptr + pid_b * rank + cols - 2, acc, mask=is_proj)
            proj_sq += tl.sum(tl.where(is_proj, acc * acc, 0.0), axis=0)
    norm = tl.sqrt(sum_sq)
    tl.store(sum_ptr + pid_b, total)
    tl.store(norm_ptr + pid_b, norm)
    if HAS_BASIS:
        safe_norm = tl.where(norm > 0, norm, 1.0)
        tl.store(mu_ptr + pid_b, tl.where(norm > 0, tl.sqrt(proj_sq) / safe_norm, float("nan")))


@lazy_kernels
def _compiled() -> tuple[Any, Any]:
    global tl
    import triton
    import triton.language as tl

    if interpreting():  # small blocks cross every boundary; one config, no benchmarking
        configs = [triton.Config({"BLOCK_R": 4}, num_warps=1)]
        finish = {"BLOCK_N": 4, "BLOCK_C": 4}
    else:
        configs = [
            triton.Config({"BLOCK_R": block_r}, num_warps=warps) for block_r, warps in _CONFIGS
        ]
        finish = {"BLOCK_N": 32, "BLOCK_C": 64}
    main = triton.autotune(configs, key=["n_elements", "n_nodes", "rank", "HAS_BASIS"])(
        triton.jit(_ig_accumulate_project_kernel)
    )
    return main, (triton.jit(_ig_finish_kernel), finish)


def ig_accumulate_project_triton(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    basis: torch.Tensor | None = None,
) -> IGProjection:
    """Fused Triton version of :func:`ig_accumulate_project_ref` (same arguments and result).

    Two launches: one pass over the gradients, inputs, base-points and basis writing ``G``,
    ``v`` and per-block partial sums, then one program per image adding the partials up.
    Reads float16, float32 or float64; accumulates and returns float32 (float64 for float64
    inputs).
    """
    batch, n_nodes, d = _check(grads, weights, inputs, baselines, basis)
    check_launch(
        "ig_accumulate_project",
        grads=grads, weights=weights, inputs=inputs, baselines=baselines, basis=basis,
    )  # fmt: skip
    if weights.dim() != 1:
        raise ValueError(f"weights must be 1-D, got shape {tuple(weights.shape)}")
    if batch == 0 or d == 0:  # nothing to launch; the twin handles empty shapes
        return ig_accumulate_project_ref(grads, weights, inputs, baselines, basis)
    if n_nodes == 0:
        raise ValueError("weights is empty: the quadrature needs at least one node")
    acc = accumulator(inputs.dtype)
    device = inputs.device
    rank = 0 if basis is None else basis.shape[2]
    mean = torch.empty(batch, d, dtype=acc, device=device)
    v = torch.empty(batch, d, dtype=acc, device=device)
    attribution_sum = torch.empty(batch, dtype=acc, device=device)
    norm = torch.empty(batch, dtype=acc, device=device)
    projection = alignment = None
    if basis is not None:
        projection = torch.empty(batch, rank, dtype=acc, device=device)
        alignment = torch.empty(batch, dtype=acc, device=device)

    g = rows(grads, batch * n_nodes, d)
    x, a = rows(inputs, batch, d), rows(baselines, batch, d)
    u = basis if basis is not None else mean  # any tensor: never read without a basis
    stride_u = (0, 0, 0) if basis is None else basis.stride()
    block = reduction_block(d)
    n_blocks = triton_cdiv(d, block)
    part = torch.empty(batch, n_blocks, 2 + rank, dtype=acc, device=device)
    main, (finish, finish_blocks) = _compiled()
    main[(batch, n_blocks)](
        g, weights.contiguous(), x, a, u, mean, v, part,
        d, n_nodes, rank, n_blocks,
        g.stride(0), x.stride(0), a.stride(0), *stride_u,
        ACC_DTYPE=tl_dtype(acc), HAS_BASIS=basis is not None, BLOCK_SIZE=block,
    )  # fmt: skip
    finish[(batch,)](
        part, attribution_sum, norm,
        norm if projection is None else projection,
        norm if alignment is None else alignment,
        n_blocks, rank,
        ACC_DTYPE=tl_dtype(acc), HAS_BASIS=basis is not None, **finish_blocks,
    )  # fmt: skip
    return IGProjection(mean, v, attribution_sum, norm, projection, alignment)
