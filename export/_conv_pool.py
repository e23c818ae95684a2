"""A convolution followed by tiling max pooling, traced as one op that never builds the
convolution's full-size output.

In the demo CNN, ``Conv2d(3, padding=1) -> ReLU -> MaxPool2d(2)`` spent two thirds of its
gradient time in ONNX Runtime on the full-size activation between the convolution and the pool:
``MaxPool`` with indices (a slow, unblocked kernel), the reorders out of the blocked (NCHWc)
layout it forces, and unpooling the gradient back to full size. Here the pooled map is computed
directly: window position ``(dh, dw)`` of every window is a stride-``s`` convolution of the
input, padded ``(p - dh, p - dw)`` before and the rest after, so the pool is the running maximum
of ``s * s`` convolutions at the pooled size, with no more multiply-adds than the convolution.
The ReLU between them commutes with the maximum (it is monotone), so it stays where it is and
masks the small pooled gradient.

Ties go to the first maximum in the window (row-major), as in torch. The op returns, beside the
pool, ``reached``: for each window position ``k`` but the last, 1 where the running maximum of
positions ``0..k`` already equals the pool. The first maximum is where ``reached`` turns 1, so
position ``k`` receives the window's gradient times ``reached[k] - reached[k-1]``. The backward
sends it there:

- where ``_decompositions.convolution_backward`` runs the input-gradient as a blocked
  convolution (a multiple of 8 input channels): unpool to full size (at the flat index that
  ``reached`` gives) and let it;
- elsewhere (the image's own channels): one stride-``s`` transposed convolution of the masked
  pooled gradients with the kernel placed at each window position. The full-size gradient is
  never built; a ``ConvTranspose`` is what this gradient would have run as anyway.

Measured on the demo CNN's gradient graph at batch 512 on 2 threads: see
``docs/performance.md`` ("Fused convolution and pooling").
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tig_batch.export._decompositions import _as_convolution

_NAMESPACE = "tig_export"


# --------------------------------------------------------------------------------- the ops


@torch.library.custom_op(f"{_NAMESPACE}::conv_max_pool2d", mutates_args=())
def conv_max_pool2d(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: Sequence[int],
    pool: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(conv2d(inputs, weight, bias, padding=padding), pool)``, and ``reached``
    (batch, s*s - 1, channels, pooled height, pooled width): see the module's docstring."""
    full = F.conv2d(inputs, weight, bias, padding=list(padding))
    (sh, sw), (height, width) = (
        pool,
        _pooled_size(inputs.shape[2:], weight.shape[2:], padding, pool),
    )
    windows = full[:, :, : height * sh, : width * sw].unflatten(3, (width, sw))
    windows = windows.unflatten(2, (height, sh)).permute(0, 1, 2, 4, 3, 5).flatten(4)
    running = windows.cummax(dim=4).values
    pooled = running[..., -1].contiguous()
    reached = (running[..., :-1] == pooled[..., None]).to(full.dtype)
    return pooled, reached.permute(0, 4, 1, 2, 3).contiguous()


@conv_max_pool2d.register_fake
def _(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: Sequence[int],
    pool: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = _pooled_size(inputs.shape[2:], weight.shape[2:], padding, pool)
    shape = (inputs.shape[0], weight.shape[0], height, width)
    return inputs.new_empty(shape), inputs.new_empty(shape[0], pool[0] * pool[1] - 1, *shape[1:])


@torch.library.custom_op(f"{_NAMESPACE}::unpool_flat", mutates_args=())
def unpool_flat(grad: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``grad`` written at the flat ``indices`` of a zero (batch, *size) tensor."""
    flat = grad.new_zeros(grad.shape[0] * size[0] * size[1] * size[2])
    flat = flat.index_put((indices.flatten(),), grad.flatten())
    return flat.view(grad.shape[0], *size)


@unpool_flat.register_fake
def _(grad: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return grad.new_empty(grad.shape[0], *size)


def _full_size(
    size: Sequence[int], kernel: Sequence[int], padding: Sequence[int]
) -> tuple[int, int]:
    """Height and width of the convolution's output (before pooling)."""
    full = [int(n) + 2 * p - int(k) + 1 for n, k, p in zip(size, kernel, padding, strict=True)]
    return full[0], full[1]


def _pooled_size(
    size: Sequence[int], kernel: Sequence[int], padding: Sequence[int], pool: Sequence[int]
) -> tuple[int, int]:
    full = _full_size(size, kernel, padding)
    return full[0] // pool[0], full[1] // pool[1]


def _window_positions(pool: Sequence[int]) -> list[tuple[int, int]]:
    return [(dh, dw) for dh in range(pool[0]) for dw in range(pool[1])]


# ----------------------------------------------------------------------------- the backward


class _ConvMaxPool2d(torch.autograd.Function):
    """:func:`conv_max_pool2d` with its gradient (with respect to the input only).

    An ``autograd.Function`` with its own ``setup_context`` rather than the op's registered
    autograd, which ``torch.func.grad`` (what the export traces) refuses.
    """

    @staticmethod
    def forward(x, weight, bias, padding, pool):  # type: ignore[no-untyped-def, override]
        return conv_max_pool2d(x, weight, bias, padding, pool)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def, override]
        x, weight, _bias, padding, pool = inputs
        ctx.save_for_backward(x, weight, output[1])
        ctx.padding, ctx.pool = list(padding), list(pool)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad, _grad_reached):  # type: ignore[no-untyped-def, override]
        x, weight, reached = ctx.saved_tensors
        # the full-size input-gradient is fast exactly where it runs as a blocked convolution
        unpools = _as_convolution(x, weight, [1, 1], ctx.padding, [1, 1])
        backward = _through_full_size if unpools else _at_pooled_size
        with torch.no_grad():  # first derivatives only: the ops inside have no autograd
            grad_x = backward(grad, reached, x, weight, ctx.padding, ctx.pool)
        return grad_x, None, None, None, None


def _through_full_size(
    grad: torch.Tensor,
    reached: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: list[int],
    pool: list[int],
) -> torch.Tensor:
    """Unpool to the convolution's full-size output, then its ordinary input-gradient."""
    batch, channels, height, width = grad.shape
    full_h, full_w = _full_size(x.shape[2:], weight.shape[2:], padding)
    # steps from each window's corner in the flat output: the last position's, walked back
    # by (step[k+1] - step[k]) wherever positions 0..k already hold the maximum
    steps = [dh * full_w + dw for dh, dw in _window_positions(pool)]
    back = torch.tensor([b - a for a, b in itertools.pairwise(steps)], dtype=grad.dtype)
    step = steps[-1] - (reached * back.to(grad.device).view(1, -1, 1, 1, 1)).sum(1)
    corner = (
        torch.arange(height, device=grad.device).view(height, 1) * (pool[0] * full_w)
        + torch.arange(width, device=grad.device) * pool[1]
    )
    planes = torch.arange(batch * channels, device=grad.device).view(batch, channels, 1, 1)
    indices = planes * (full_h * full_w) + corner + step.long()
    full = unpool_flat(grad, indices, [channels, full_h, full_w])
    return torch.ops.aten.convolution_backward(
        full, x, weight, None, [1, 1], padding, [1, 1], False, [0, 0], 1, [True, False, False]
    )[0]


def _at_pooled_size(
    grad: torch.Tensor,
    reached: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    padding: list[int],
    pool: list[int],
) -> torch.Tensor:
    """One strided transposed convolution of the masked pooled gradients.

    Position ``k`` gets ``grad * (reached[k] - reached[k-1])``; summed over positions against
    the kernel placed at each, that is ``grad * reached[k]`` against the difference of
    consecutive placed kernels, which saves the subtractions.
    """
    masked = torch.cat([grad[:, None] * reached, grad[:, None]], dim=1).flatten(1, 2)
    full = _full_size(x.shape[2:], weight.shape[2:], padding)
    extra = [full[i] - grad.shape[2 + i] * pool[i] for i in (0, 1)]  # rows the pool dropped
    placed = window_kernels(weight, pool)
    kernel = torch.cat([placed[:-1] - placed[1:], placed[-1:]]).flatten(0, 1)
    return F.conv_transpose2d(masked, kernel, None, pool, padding, extra)


def window_kernels(weight: torch.Tensor, pool: Sequence[int]) -> torch.Tensor:
    """(s*s, out, in, kh + sh - 1, kw + sw - 1): the kernel placed at each window position; a
    stride-``s`` convolution with one of them computes that position of every window."""
    return torch.stack(
        [
            F.pad(weight, (dw, pool[1] - 1 - dw, dh, pool[0] - 1 - dh))
            for dh, dw in _window_positions(pool)
        ]
    )


# ------------------------------------------------------------------------ ONNX translation


def onnx_conv_max_pool2d(inputs, weight, bias, padding: Sequence[int], pool: Sequence[int]):  # type: ignore[no-untyped-def]
    """``s * s`` strided convolutions, one per window position, their running maximum, and
    where it already equals the pool."""
    from onnxscript import opset18 as op

    size = [int(n) for n in inputs.shape[2:]]
    kernel = [int(k) for k in weight.shape[2:]]
    pooled_size = _pooled_size(size, kernel, padding, pool)
    args = (inputs, weight) if bias is None else (inputs, weight, bias)
    running = []
    for dh, dw in _window_positions(pool):
        before = [padding[0] - dh, padding[1] - dw]
        # as much as the last window needs; 0 where the pool drops the last rows (the
        # convolution then stops short of them, as padding >= window - 1 guarantees)
        after = [
            max(0, pool[i] * (pooled_size[i] - 1) + kernel[i] - size[i] - before[i]) for i in (0, 1)
        ]
        conv = op.Conv(*args, pads=[*before, *after], strides=list(pool))
        running.append(op.Max(running[-1], conv) if running else conv)
    pooled = running[-1]
    axis = op.Constant(value_ints=[1])
    reached = [op.Unsqueeze(op.Cast(op.Equal(r, pooled), to=1), axis) for r in running[:-1]]
    return pooled, op.Concat(*reached, axis=1) if len(reached) > 1 else reached[0]


def onnx_unpool_flat(grad, indices, size: Sequence[int]):  # type: ignore[no-untyped-def]
    from onnxscript import opset18 as op

    batch = op.Shape(grad, start=0, end=1)
    shape = op.Concat(batch, op.Constant(value_ints=list(size)), axis=0)
    return op.MaxUnpool(grad, indices, shape, kernel_shape=[1, 1])


def translation_table() -> dict[Callable, Callable]:
    """This module's ops and their ONNX translations, for ``torch.onnx.export``."""
    return {
        torch.ops.tig_export.conv_max_pool2d.default: onnx_conv_max_pool2d,
        torch.ops.tig_export.unpool_flat.default: onnx_unpool_flat,
    }


# ------------------------------------------------------------------------- the model rewrite


class ConvMaxPool2d(nn.Module):
    """A convolution and the tiling max pool after it, as :func:`conv_max_pool2d`."""

    def __init__(self, conv: nn.Conv2d, pool: Sequence[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self.padding = [int(p) for p in conv.padding]
        self.pool = [int(s) for s in pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ConvMaxPool2d.apply(x, self.weight, self.bias, self.padding, self.pool)[0]


def fuse_conv_max_pool(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each ``Conv2d [-> ReLU] -> MaxPool2d`` run of an
    ``nn.Sequential`` that fits (:func:`_fusable`) replaced by ``ConvMaxPool2d [-> ReLU]``.
    ``nn.Identity`` in the run (a batch norm folded away) is skipped."""
    model = copy.deepcopy(model)
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for i, name in enumerate(names):
            pool_name = _pool_after(module, names[i + 1 :])
            if pool_name is None:
                continue
            conv, pool = module._modules[name], module._modules[pool_name]
            window = _fusable(conv, pool, uses)
            if window is not None:
                setattr(module, name, ConvMaxPool2d(conv, window))  # type: ignore[arg-type]
                setattr(module, pool_name, nn.Identity())
    return model


def _pool_after(sequence: nn.Sequential, names: list[str]) -> str | None:
    """The name of the ``MaxPool2d`` that follows, past identities and at most one ReLU."""
    relus = 0
    for name in names:
        layer = sequence._modules[name]
        if isinstance(layer, nn.MaxPool2d):
            return name
        relus += isinstance(layer, nn.ReLU)
        if relus > 1 or not isinstance(layer, nn.ReLU | nn.Identity):
            return None
    return None


def _fusable(conv: object, pool: object, uses: Counter[int]) -> list[int] | None:
    """The pool's window if ``conv -> pool`` can fuse: a plain stride-1 ``Conv2d`` used once,
    zero-padded by at least ``window - 1``, then a ``MaxPool2d`` whose windows tile."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(pool, nn.MaxPool2d):
        return None
    if uses[id(conv)] != 1 or uses[id(pool)] != 1:
        return None
    window = [int(k) for k in _pair(pool.kernel_size)]
    tiles = (
        window != [1, 1]
        and [int(s) for s in _pair(pool.stride or pool.kernel_size)] == window
        and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
    )
    plain = (
        conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and all(p >= s - 1 for p, s in zip(conv.padding, window, strict=True))
    )
    return window if tiles and plain else None


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
