"""Decompositions of the backward ops that the ONNX exporter cannot translate.

Tracing ``torch.func.grad`` of a classifier leaves aten ``*_backward`` ops in the graph; torch's
core decompositions lower many of them, and each function here lowers one more into ops ONNX
has (transposed convolutions, scatter-adds, matrix products). One small function per op, each
tested against autograd in ``tests/test_export_decompositions.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions

from tig_batch.export import _onnx_ops as _ops

aten = torch.ops.aten
_OURS: dict[torch._ops.OpOverload, Callable] = {}


def _lowers(op: torch._ops.OpOverload) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        _OURS[op] = fn
        return fn

    return register


@functools.cache
def decomposition_table() -> dict[torch._ops.OpOverload, Callable]:
    """torch's core ATen decompositions, with ours taking precedence."""
    return {**core_aten_decompositions(), **_OURS}


def handled_ops() -> frozenset[torch._ops.OpOverload]:
    """The ops this module lowers itself."""
    return frozenset(_OURS)


def _output_padding(
    in_size: Sequence[int],
    out_size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    """The rows and columns a strided convolution dropped, which its transpose must restore."""
    return [
        in_size[i]
        - ((out_size[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
        for i in range(len(stride))
    ]


@_lowers(aten.convolution_backward.default)
def convolution_backward(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, None, None]:
    """Input-gradient of a 2-D (transposed) convolution; weight and bias gradients are not needed.

    The input-gradient of a convolution is the transposed convolution with the same weight, and
    the other way round.
    """
    if len(stride) != 2:
        raise NotImplementedError("only 2-D convolutions are supported")
    if not output_mask[0]:
        return None, None, None
    if transposed:
        grad = F.conv2d(grad_output, weight, None, stride, padding, dilation, groups)
    elif _as_convolution(inputs, weight, stride, padding, dilation):
        sizes = zip(dilation, weight.shape[2:], padding, strict=True)
        pad = [d * (int(k) - 1) - p for d, k, p in sizes]  # int: the kernel's size is static
        kernel = _transposed_kernel(weight, groups)
        grad = F.conv2d(grad_output, kernel, None, 1, pad, dilation, groups)
    else:
        pad = _output_padding(
            inputs.shape[2:], grad_output.shape[2:], weight.shape[2:], stride, padding, dilation
        )
        grad = F.conv_transpose2d(grad_output, weight, None, stride, padding, pad, groups, dilation)
    return grad, None, None


def _as_convolution(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> bool:
    """Whether to run a convolution's input-gradient as a plain convolution (a stride-1
    transpose is one, with the kernel flipped), which ONNX Runtime's blocked (NCHWc) kernels
    run about twice as fast as ``ConvTranspose`` (64 to 32 channels at 14x14). Those kernels
    pad output channels to blocks of 8 or 16, so a gradient with few channels (the image's
    own) stays a ``ConvTranspose``: with one channel the convolution took 3.5x as long.
    """
    sizes = zip(dilation, weight.shape[2:], padding, strict=True)
    return (
        all(s == 1 for s in stride)
        and all(d * (k - 1) >= p for d, k, p in sizes)
        and inputs.shape[1] % 8 == 0
    )


def _transposed_kernel(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The kernel of a stride-1 convolution's transpose: in and out channels swapped (per
    group), spatially flipped. A constant of the graph, folded at export."""
    out_channels, in_per_group = weight.shape[:2]
    kernel = weight.reshape(groups, out_channels // groups, in_per_group, *weight.shape[2:])
    kernel = kernel.transpose(1, 2).reshape(
        groups * in_per_group, out_channels // groups, *weight.shape[2:]
    )
    return kernel.flip(2, 3)


def _tiles(
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> bool:
    """Whether max-pool windows tile the input (stride = kernel, no padding or dilation)."""
    return (
        len(kernel_size) == 2
        and list(stride or kernel_size) == list(kernel_size)
        and all(p == 0 for p in padding)
        and all(d == 1 for d in dilation)
    )


@_lowers(aten.max_pool2d_with_indices.default)
def max_pool2d_with_indices(
    inputs: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    ceil_mode: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiling windows: ONNX ``MaxPool`` with flat indices (see ``export/_onnx_ops.py``), which
    only :func:`max_pool2d_with_indices_backward` reads. Other windows: torch's own op."""
    kernel_size = list(kernel_size) * (2 // len(kernel_size))
    if _tiles(kernel_size, stride, padding, dilation) and inputs.dim() == 4 and not ceil_mode:
        return _ops.max_pool2d_flat(inputs, kernel_size)
    return NotImplemented


@_lowers(aten.max_pool2d_with_indices_backward.default)
def max_pool2d_with_indices_backward(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    indices: torch.Tensor,
) -> torch.Tensor:
    """Tiling windows: ``MaxUnpool`` at the flat indices of :func:`max_pool2d_with_indices`.
    Others: scatter-add each window's gradient to the flat position of its maximum."""
    kernel_size = list(kernel_size) * (2 // len(kernel_size))
    if _tiles(kernel_size, stride, padding, dilation) and inputs.dim() == 4 and not ceil_mode:
        return _ops.max_unpool2d_flat(grad_output, indices, inputs, kernel_size)
    batch, channels, height, width = inputs.shape
    flat = grad_output.new_zeros(batch, channels, height * width)
    flat = flat.scatter_add(2, indices.flatten(2), grad_output.flatten(2))
    return flat.view(batch, channels, height, width)


@_lowers(aten.avg_pool2d_backward.default)
def avg_pool2d_backward(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> torch.Tensor:
    """Spread each window's gradient over it, divided by the window's own divisor.

    Works on a canvas whose origin is the top-left padding corner and which every window
    covers; the divisor of each window counts the canvas cells PyTorch counts (the input, plus
    the padding when ``count_include_pad``), so ``ceil_mode`` windows come out right too.
    """
    channels, height, width = inputs.shape[1:]
    kh, kw = kernel_size
    sh, sw = stride if len(stride) else kernel_size
    ph, pw = padding
    oh, ow = grad_output.shape[2:]
    canvas_h, canvas_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    ones = grad_output.new_ones(1, 1, kh, kw)
    if divisor_override:
        counts = grad_output.new_full((1, 1, oh, ow), float(divisor_override))
    else:
        top, left = (0, 0) if count_include_pad else (ph, pw)
        bottom = height + 2 * ph if count_include_pad else ph + height
        right = width + 2 * pw if count_include_pad else pw + width
        mask = _band(canvas_h, top, bottom, grad_output)[:, None] * _band(
            canvas_w, left, right, grad_output
        )
        counts = F.conv2d(mask[None, None], ones, stride=(sh, sw))
    spread = F.conv_transpose2d(
        grad_output / counts, ones.expand(channels, 1, kh, kw), stride=(sh, sw), groups=channels
    )
    spread = F.pad(spread, (0, max(0, pw + width - canvas_w), 0, max(0, ph + height - canvas_h)))
    return spread[:, :, ph : ph + height, pw : pw + width]


def _band(size: int, start: int, end: int, like: torch.Tensor) -> torch.Tensor:
    """1.0 on ``[start, end)`` of ``range(size)``, else 0 (built without in-place writes)."""
    index = torch.arange(size, device=like.device)
    return ((index >= start) & (index < end)).to(like.dtype)


def _adaptive_bins(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out, in) averaging matrix of adaptive pooling's bins along one axis."""
    bins = torch.arange(out_size, device=like.device)[:, None]
    start = torch.div(bins * in_size, out_size, rounding_mode="floor")
    end = -torch.div(-(bins + 1) * in_size, out_size, rounding_mode="floor")
    index = torch.arange(in_size, device=like.device)[None, :]
    inside = (index >= start) & (index < end)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


@_lowers(aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(inputs: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """``A_h x A_w^T`` with constant bin matrices: two matrix products instead of a loop."""
    rows = _adaptive_bins(int(inputs.shape[-2]), int(output_size[0]), inputs)
    cols = _adaptive_bins(int(inputs.shape[-1]), int(output_size[1]), inputs)
    return rows @ inputs @ cols.T


@_lowers(aten._adaptive_avg_pool2d_backward.default)
def adaptive_avg_pool2d_backward(grad_output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`adaptive_avg_pool2d`: ``A_h^T g A_w``."""
    rows = _adaptive_bins(int(inputs.shape[-2]), int(grad_output.shape[-2]), grad_output)
    cols = _adaptive_bins(int(inputs.shape[-1]), int(grad_output.shape[-1]), grad_output)
    return rows.T @ grad_output @ cols


@_lowers(aten.threshold_backward.default)
def threshold_backward(
    grad_output: torch.Tensor, inputs: torch.Tensor, threshold: float
) -> torch.Tensor:
    """ReLU's gradient as ``g * (x > threshold)``: ONNX Runtime multiplies far faster than it
    runs the ``Where`` torch's own lowering produces (28% of a small CNN's gradient time)."""
    return grad_output * (inputs > threshold).to(grad_output.dtype)


@_lowers(aten.empty_permuted.default)
def empty_permuted(
    size: Sequence[int],
    physical_layout: Sequence[int],
    dtype: torch.dtype | None = None,
    layout: torch.layout | None = None,
    device: torch.device | None = None,
    pin_memory: bool | None = None,
) -> torch.Tensor:
    """A fresh buffer that is overwritten at once (SiLU's gradient formula builds ``1 - s`` so)."""
    return torch.zeros(size, dtype=dtype, device=device)
