"""Ops of our own that the traced gradient graphs use where ONNX has a faster form than the
one the exporter would derive from ATen, each with its ONNX translation.

Non-overlapping max pooling (stride equal to the kernel, no padding or dilation, the common
``MaxPool2d(2)``) runs as ONNX ``MaxPool`` with its flat indices, and its backward as
``MaxUnpool`` of the gradient at those indices. The exporter's own translation of
``max_pool2d_with_indices`` runs a second, kernel-1 ``MaxPool`` over the whole input to turn
ONNX's flat indices into torch's per-plane ones, and the backward then scatter-adds: together
about half of the demo CNN's gradient time in ONNX Runtime. Windows that do not overlap send
each input at most one gradient, so writing (unpooling) equals adding (scatter-add).

The indices here are flat over the whole (B, C, H, W) input, as ONNX's; only the backward
below reads them. Ties go to the first maximum in the window in both torch and ONNX Runtime
(``tests/test_export.py`` checks this on windows of equal values).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch

_NAMESPACE = "tig_export"


@torch.library.custom_op(f"{_NAMESPACE}::max_pool2d_flat", mutates_args=())
def max_pool2d_flat(
    inputs: torch.Tensor, kernel_size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling with window = stride = ``kernel_size``; indices flat over all of ``inputs``."""
    pooled, indices = torch.nn.functional.max_pool2d(inputs, kernel_size, return_indices=True)
    batch, channels, height, width = inputs.shape
    planes = torch.arange(batch * channels, device=inputs.device).view(batch, channels, 1, 1)
    return pooled, indices + planes * (height * width)


@max_pool2d_flat.register_fake
def _(inputs: torch.Tensor, kernel_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    batch, channels, height, width = inputs.shape
    shape = (batch, channels, height // kernel_size[0], width // kernel_size[1])
    return inputs.new_empty(shape), inputs.new_empty(shape, dtype=torch.long)


@torch.library.custom_op(f"{_NAMESPACE}::max_unpool2d_flat", mutates_args=())
def max_unpool2d_flat(
    grad_output: torch.Tensor,
    indices: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: Sequence[int],
) -> torch.Tensor:
    """``grad_output`` written at the flat ``indices`` of a zero tensor shaped like ``inputs``."""
    flat = grad_output.new_zeros(inputs.numel())
    flat = flat.index_put((indices.flatten(),), grad_output.flatten())
    return flat.view(inputs.shape)


@max_unpool2d_flat.register_fake
def _(
    grad_output: torch.Tensor,
    indices: torch.Tensor,
    inputs: torch.Tensor,
    kernel_size: Sequence[int],
) -> torch.Tensor:
    return torch.empty_like(inputs)


def _onnx_max_pool2d_flat(inputs, kernel_size: Sequence[int]):  # type: ignore[no-untyped-def]
    from onnxscript import opset18 as op

    kernel = list(kernel_size)
    pooled, indices = op.MaxPool(inputs, kernel_shape=kernel, strides=kernel)
    return pooled, indices


def _onnx_max_unpool2d_flat(grad_output, indices, inputs, kernel_size: Sequence[int]):  # type: ignore[no-untyped-def]
    from onnxscript import opset18 as op

    kernel = list(kernel_size)
    return op.MaxUnpool(grad_output, indices, op.Shape(inputs), kernel_shape=kernel, strides=kernel)


def translation_table() -> dict[Callable, Callable]:
    """Our ops and their ONNX translations, for ``torch.onnx.export``."""
    return {
        torch.ops.tig_export.max_pool2d_flat.default: _onnx_max_pool2d_flat,
        torch.ops.tig_export.max_unpool2d_flat.default: _onnx_max_unpool2d_flat,
    }


def mask_before_unpooling(graph: torch.fx.GraphModule) -> int:
    """Apply a ReLU's gradient mask to the pooled gradient, before unpooling: a quarter of the
    work. Returns how many masks moved.

    The unpooled gradient is zero except at each window's maximum, where the pooling's input
    equals the pooled value, so ``unpool(g) * (x > t) == unpool(g * (pooled > t))`` exactly.
    Matches ``mul(max_unpool2d_flat(g, i, x, k), _to_copy(gt(x, t)))``, the form of ReLU's
    lowered gradient (``threshold_backward`` in ``export/_decompositions.py``).
    """
    aten, unpool_op = torch.ops.aten, torch.ops.tig_export.max_unpool2d_flat.default
    moved = 0
    for node in list(graph.graph.nodes):
        if node.target is not aten.mul.Tensor or len(node.args) != 2:
            continue
        unpool, cast = node.args
        if getattr(cast, "target", None) is unpool_op:
            unpool, cast = cast, unpool
        if getattr(unpool, "target", None) is not unpool_op or not _is_mask_of(
            cast, unpool.args[2]
        ):
            continue
        grad, indices, inputs, kernel = unpool.args
        pooled = _pooled_values(graph, indices)
        if pooled is None:
            continue
        with graph.graph.inserting_before(node):
            mask = graph.graph.call_function(aten.gt.Scalar, (pooled, cast.args[0].args[1]))
            mask = graph.graph.call_function(aten._to_copy.default, (mask,), dict(cast.kwargs))
            masked = graph.graph.call_function(aten.mul.Tensor, (grad, mask))
            replacement = graph.graph.call_function(unpool_op, (masked, indices, inputs, kernel))
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        moved += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return moved


def _is_mask_of(node: object, inputs: torch.fx.Node) -> bool:
    """``node`` is ``_to_copy(gt(inputs, t), dtype=...)``: a comparison cast to numbers."""
    aten = torch.ops.aten
    if not isinstance(node, torch.fx.Node) or node.target is not aten._to_copy.default:
        return False
    compare = node.args[0]
    return (
        isinstance(compare, torch.fx.Node)
        and compare.target is aten.gt.Scalar
        and compare.args[0] is inputs
        and set(node.kwargs) == {"dtype"}
    )


def _pooled_values(graph: torch.fx.GraphModule, indices: torch.fx.Node) -> torch.fx.Node | None:
    """The pooled values of the ``max_pool2d_flat`` whose indices are ``indices``."""
    pool = indices.args[0] if indices.target is operator.getitem else None
    if getattr(pool, "target", None) is not torch.ops.tig_export.max_pool2d_flat.default:
        return None
    for user in pool.users:
        if user.target is operator.getitem and user.args[1] == 0:
            return user
    with graph.graph.inserting_after(pool):
        return graph.graph.call_function(operator.getitem, (pool, 0))
