"""Each backward-op lowering and graph rewrite in export/ against torch autograd (no ONNX)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from tig_batch.export import _decompositions as decomp
from tig_batch.export._onnx_ops import mask_before_unpooling
from tig_batch.export._trace import fold_batch_norm

ops = torch.ops.tig_export

GEN = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


def _input_grad(fn, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x, grad_out)
    return grad


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "size", "channels"),
    [
        (1, 0, 1, 1, 9, 4),
        (2, 1, 1, 2, 10, 4),
        (3, 2, 2, 1, 11, 4),
        (2, 0, 1, 4, 8, 4),
        (1, 1, 1, 1, 7, 8),  # stride 1 and 8 channels: a plain convolution, kernel flipped
        (1, 2, 2, 2, 9, 16),
        (1, 3, 1, 1, 8, 8),  # more padding than the kernel reaches: transposed convolution
    ],
)
def test_convolution_backward(
    stride: int, padding: int, dilation: int, groups: int, size: int, channels: int
) -> None:
    x = _rand(2, channels, size, size)
    weight = _rand(6 if groups != 4 else 8, channels // groups, 3, 3)
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    grad_out = _rand(*out.shape)
    grad, _, _ = decomp.convolution_backward(
        grad_out, x, weight, None, [stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0],
        groups, [True, False, False],
    )  # fmt: skip
    expected = _input_grad(
        lambda x: F.conv2d(x, weight, None, stride, padding, dilation, groups), x, grad_out
    )
    torch.testing.assert_close(grad, expected)


def test_transposed_convolution_backward() -> None:
    x, weight = _rand(2, 4, 5, 5), _rand(4, 3, 3, 3)
    args = dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)
    out = F.conv_transpose2d(x, weight, **args)
    grad_out = _rand(*out.shape)
    grad, _, _ = decomp.convolution_backward(
        grad_out, x, weight, None, [2, 2], [1, 1], [1, 1], True, [1, 1], 1, [True, False, False]
    )
    torch.testing.assert_close(
        grad, _input_grad(lambda x: F.conv_transpose2d(x, weight, **args), x, grad_out)
    )


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil"),
    [(2, 2, 0, False), (3, 3, 0, False), (3, 2, 1, True), (2, 2, 1, False)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_forward_and_backward(
    kernel: int, stride: int, padding: int, ceil: bool, ties: bool
) -> None:
    x = _rand(2, 3, 9, 9)
    if ties:  # a few distinct values: most windows hold their maximum more than once
        x = x.round().clamp(-1, 1)
    args = [kernel] * 2, [stride] * 2, [padding] * 2, [1, 1], ceil
    lowered = decomp.max_pool2d_with_indices(x, *args)
    if lowered is NotImplemented:  # overlapping or padded windows: torch's own forward
        lowered = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil, return_indices=True)
    out, indices = lowered
    expected_out = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    torch.testing.assert_close(out, expected_out)
    grad_out = _rand(*out.shape)
    grad = decomp.max_pool2d_with_indices_backward(grad_out, x, *args, indices)
    expected = _input_grad(
        lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil), x, grad_out
    )
    torch.testing.assert_close(grad, expected)


def test_tiling_max_pool_indices_are_flat_over_the_whole_input() -> None:
    x = _rand(2, 3, 4, 6)
    _, flat = decomp.max_pool2d_with_indices(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    _, per_plane = F.max_pool2d(x, 2, return_indices=True)
    planes = torch.arange(6).view(2, 3, 1, 1)
    torch.testing.assert_close(flat, per_plane + planes * 24)
    torch.testing.assert_close(x.flatten()[flat], F.max_pool2d(x, 2))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil", "include_pad", "divisor"),
    [
        (2, 2, 0, False, True, None),
        (3, 2, 1, True, False, None),
        (3, 2, 1, True, True, None),
        (3, 3, 1, False, True, 4),
        (2, 3, 0, False, True, None),
    ],
)
def test_avg_pool_backward(
    kernel: int, stride: int, padding: int, ceil: bool, include_pad: bool, divisor: int | None
) -> None:
    x = _rand(2, 3, 10, 9)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel, stride, padding, ceil, include_pad, divisor)

    grad_out = _rand(*pool(x).shape)
    grad = decomp.avg_pool2d_backward(
        grad_out, x, [kernel] * 2, [stride] * 2, [padding] * 2, ceil, include_pad, divisor
    )
    torch.testing.assert_close(grad, _input_grad(pool, x, grad_out))


@pytest.mark.parametrize(
    ("size", "output"), [((9, 9), (3, 3)), ((10, 7), (4, 3)), ((5, 5), (5, 5))]
)
def test_adaptive_avg_pool_forward_and_backward(
    size: tuple[int, int], output: tuple[int, int]
) -> None:
    x = _rand(2, 3, *size)
    torch.testing.assert_close(
        decomp.adaptive_avg_pool2d(x, output), F.adaptive_avg_pool2d(x, output)
    )
    grad_out = _rand(2, 3, *output)
    expected = _input_grad(lambda x: F.adaptive_avg_pool2d(x, output), x, grad_out)
    torch.testing.assert_close(decomp.adaptive_avg_pool2d_backward(grad_out, x), expected)


def test_empty_permuted_has_the_requested_shape_and_dtype() -> None:
    out = decomp.empty_permuted([2, 3], [0, 1], dtype=torch.float64)
    assert out.shape == (2, 3) and out.dtype == torch.float64


def test_our_lowerings_take_precedence_over_torchs() -> None:
    table = decomp.decomposition_table()
    for op in decomp.handled_ops():
        assert table[op] is decomp._OURS[op]


def test_threshold_backward() -> None:
    x = _rand(3, 4, 5)
    x[0, 0, :2] = 0.0  # at the threshold the gradient is zero, as autograd's
    grad_out = _rand(3, 4, 5)
    expected = _input_grad(torch.relu, x, grad_out)
    torch.testing.assert_close(decomp.threshold_backward(grad_out, x, 0.0), expected)


def _relu_pool_gradient_graph(model: torch.nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    return make_fx(
        torch.func.grad(lambda x: model(x).sum()),
        decomposition_table=decomp.decomposition_table(),
    )(x)


def test_relu_mask_moves_before_unpooling_and_keeps_the_gradient() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3),
    ).double()  # fmt: skip
    x = _rand(3, 2, 8, 8)
    x[:, :, :4] = 0.0  # constant regions: equal maxima, and zeros, in many windows
    graph = _relu_pool_gradient_graph(model, x)
    full_size = [n for n in graph.graph.nodes if n.target is torch.ops.aten.gt.Scalar]
    assert mask_before_unpooling(graph) == 2
    moved = [n for n in graph.graph.nodes if n.target is torch.ops.aten.gt.Scalar]
    assert len(moved) == len(full_size)
    assert all(n.args[0].args[0].target is ops.max_pool2d_flat.default for n in moved[-2:])
    torch.testing.assert_close(graph(x), _input_grad(lambda x: model(x).sum(), x, None))


def test_fold_batch_norm_into_the_convolution_before_it() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(4, 4, 3, groups=2), torch.nn.BatchNorm2d(4),  # not folded
        torch.nn.BatchNorm2d(4),  # follows a batch norm: an affine map
    )  # fmt: skip
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    model.eval()
    folded = fold_batch_norm(model)
    assert [type(m).__name__ for m in folded] == [
        "Conv2d", "Identity", "ReLU", "ConvTranspose2d", "ChannelAffine", "ChannelAffine"
    ]  # fmt: skip
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
