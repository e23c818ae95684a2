"""Interpolate the IG path: ``a + t_k (x - a)`` for every image and node, in one write.

Memory traffic: reads ``x`` and ``a`` once (2*B*d elements), writes the path batch once
(B*K*d elements). Done as torch ops it also materialises ``x - a``.
"""

from __future__ import annotations

from typing import Any

import torch

from tig_batch.kernels._triton import (
    accumulator,
    check_launch,
    interpreting,
    lazy_kernels,
    rows,
    tl_dtype,
    triton_cdiv,
)


def _check(inputs: torch.Tensor, baselines: torch.Tensor, nodes: torch.Tensor) -> None:
    if inputs.shape != baselines.shape:
        raise ValueError(
            f"inputs and baselines differ in shape: {tuple(inputs.shape)} vs "
            f"{tuple(baselines.shape)}"
        )
    if nodes.dim() != 1:
        raise ValueError(f"nodes must be 1-D, got shape {tuple(nodes.shape)}")


def path_shape(inputs: torch.Tensor, nodes: torch.Tensor) -> tuple[int, ...]:
    """Shape of the path batch: (B*K, *image shape), image-major (row ``b*K + k``)."""
    return (inputs.shape[0] * nodes.numel(), *inputs.shape[1:])


def interpolate_path_ref(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    nodes: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch twin: write ``baselines[b] + nodes[k] * (inputs[b] - baselines[b])`` to row b*K+k.

    ``out`` (optional) receives the result in its own dtype, so it can be the model's input
    buffer; computed in at least float32.
    """
    _check(inputs, baselines, nodes)
    compute = torch.promote_types(inputs.dtype, torch.float32)
    x = inputs.flatten(1).to(compute)
    a = baselines.flatten(1).to(compute)
    path = torch.addcmul(a[:, None, :], nodes.to(compute)[None, :, None], (x - a)[:, None, :])
    path = path.view(path_shape(inputs, nodes))
    if out is None:
        return path.to(inputs.dtype)
    if out.shape != path.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(path.shape)}")
    return out.copy_(path)


# --- Triton ------------------------------------------------------------------------------------
# ``tl`` is bound on the first launch (see ``_compiled``), so importing this module needs no
# Triton; the kernel below is plain Python until ``triton.jit`` decorates it.
tl: Any = None

#: Autotuned (BLOCK_SIZE, num_warps).
_CONFIGS = ((256, 2), (512, 4), (1024, 4), (1024, 8), (2048, 8))


def _interpolate_path_kernel(
    x_ptr,  # inputs (B, d), rows at stride_xb, unit stride within a row
    a_ptr,  # baselines (B, d), rows at stride_ab
    t_ptr,  # quadrature nodes (K,)
    out_ptr,  # path batch (B*K, d), row b*K + k at stride_outb; written in its own dtype
    n_elements,  # d: elements per image
    n_nodes,  # K
    stride_xb,
    stride_ab,
    stride_outb,
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
    BLOCK_SIZE: tl.constexpr,  # elements of d per program
):
    # Grid (B, cdiv(d, BLOCK_SIZE)): each program reads its block of x and a once and writes
    # it K times, once per node, so x - a is never materialised in memory.
    pid_b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n_elements
    x = tl.load(x_ptr + pid_b * stride_xb + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    a = tl.load(a_ptr + pid_b * stride_ab + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    diff = x - a
    out_row = out_ptr + pid_b * n_nodes * stride_outb + offs
    for k in range(n_nodes):
        t = tl.load(t_ptr + k).to(ACC_DTYPE)
        path = a + t * diff
        tl.store(out_row + k * stride_outb, path.to(out_ptr.dtype.element_ty), mask=mask)


@lazy_kernels
def _compiled() -> Any:
    global tl
    import triton
    import triton.language as tl

    if interpreting():  # one small config: crosses block boundaries, no benchmarking
        configs = [triton.Config({"BLOCK_SIZE": 32}, num_warps=1)]
    else:
        configs = [
            triton.Config({"BLOCK_SIZE": block}, num_warps=warps) for block, warps in _CONFIGS
        ]
    return triton.autotune(configs, key=["n_elements", "n_nodes"])(
        triton.jit(_interpolate_path_kernel)
    )


def interpolate_path_triton(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    nodes: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused Triton version of :func:`interpolate_path_ref` (same arguments and result).

    ``out`` must be contiguous (it is written in place, e.g. a model's input buffer); computed
    in float32 (float64 for float64 inputs) and stored in ``out``'s dtype.
    """
    _check(inputs, baselines, nodes)
    check_launch("interpolate_path", inputs=inputs, baselines=baselines, nodes=nodes, out=out)
    shape = path_shape(inputs, nodes)
    if out is None:
        out = torch.empty(shape, dtype=inputs.dtype, device=inputs.device)
    elif out.shape != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
    elif not out.is_contiguous():
        raise ValueError("out must be contiguous: the kernel writes the path batch in place")
    batch, n_nodes = inputs.shape[0], nodes.numel()
    if out.numel() == 0:
        return out
    n_elements = inputs[0].numel()
    x = rows(inputs, batch, n_elements)
    a = rows(baselines, batch, n_elements)
    kernel = _compiled()
    grid = lambda meta: (batch, triton_cdiv(n_elements, meta["BLOCK_SIZE"]))  # noqa: E731
    kernel[grid](
        x, a, nodes.contiguous(), out, n_elements, n_nodes,
        x.stride(0), a.stride(0), n_elements,
        ACC_DTYPE=tl_dtype(accumulator(inputs.dtype)),
    )  # fmt: skip
    return out
