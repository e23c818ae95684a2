"""Each backward-op lowering in export/ against torch autograd (no ONNX involved)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tig_batch.export import _decompositions as decomp

GEN = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


def _input_grad(fn, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x, grad_out)
    return grad


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "size"),
    [(1, 0, 1, 1, 9), (2, 1, 1, 2, 10), (3, 2, 2, 1, 11), (2, 0, 1, 4, 8)],
)
def test_convolution_backward(
    stride: int, padding: int, dilation: int, groups: int, size: int
) -> None:
    x, weight = _rand(2, 4, size, size), _rand(6 if groups != 4 else 8, 4 // groups, 3, 3)
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
    ("kernel", "stride", "padding", "ceil"), [(2, 2, 0, False), (3, 2, 1, True)]
)
def test_max_pool_backward(kernel: int, stride: int, padding: int, ceil: bool) -> None:
    x = _rand(2, 3, 9, 9)
    out, indices = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil, return_indices=True)
    grad_out = _rand(*out.shape)
    grad = decomp.max_pool2d_with_indices_backward(
        grad_out, x, [kernel] * 2, [stride] * 2, [padding] * 2, [1, 1], ceil, indices
    )
    expected = _input_grad(
        lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil), x, grad_out
    )
    torch.testing.assert_close(grad, expected)


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
