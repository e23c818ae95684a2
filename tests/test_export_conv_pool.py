"""Fused convolution and max pooling in the exported gradient graphs (``export/_conv_pool.py``):
the op against torch's convolution then pooling, the gradients against autograd on the unfused
model, and which layer runs it rewrites."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tig_batch as tig
from tig_batch.backends import OnnxClassifier, Runtime
from tig_batch.export import gradient_graph
from tig_batch.export._conv_pool import ConvMaxPool2d, conv_max_pool2d, fuse_conv_max_pool
from tig_batch.export._trace import save_onnx
from tig_batch.models import SmallCNN


def _inputs(batch: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Random images whose top rows are constant: equal activations there tie the windows."""
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
    x[:, :, : 3 * size // 4] = 0.25
    return x


@pytest.mark.parametrize(("pool", "size", "padding"), [(2, 8, 1), (2, 9, 1), (3, 10, 2)])
def test_the_op_is_convolution_then_pooling_with_ties_at_the_first_maximum(
    pool: int, size: int, padding: int
) -> None:
    torch.manual_seed(0)
    x, weight, bias = _inputs(3, 2, size, 1), torch.randn(4, 2, 3, 3), torch.randn(4)
    pooled, reached = conv_max_pool2d(x, weight, bias, [padding] * 2, [pool] * 2)
    full = F.conv2d(x, weight, bias, padding=padding)
    expected, flat = F.max_pool2d(full, pool, return_indices=True)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
    # torch's first maximum, as a row-major position in its window
    first = (flat // full.shape[3] % pool) * pool + flat % full.shape[3] % pool
    positions = torch.arange(pool * pool - 1).view(1, -1, 1, 1, 1)
    assert reached.shape == (3, pool * pool - 1, *expected.shape[1:])
    assert torch.equal(reached, (positions >= first[:, None]).float())
    crop = full[:, :, : expected.shape[2] * pool, : expected.shape[3] * pool]
    tied = F.max_pool2d(crop, pool) == -F.max_pool2d(-crop, pool)  # all equal in the window
    assert tied.sum() >= 4, "the constant rows should give tied windows"
    assert (first[tied] == 0).all()


def _stack(in_channels: int, pool: int, kernel: int, bias: bool, relu: bool) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 8, kernel, padding=kernel // 2, bias=bias),
        nn.BatchNorm2d(8),
    ]
    layers += [nn.ReLU()] if relu else []
    layers += [nn.MaxPool2d(pool), nn.Flatten(), nn.LazyLinear(3)]
    return nn.Sequential(*layers)


def _exported(model: nn.Module, example: torch.Tensor, path: Path) -> OnnxClassifier:
    target = torch.zeros(example.shape[0], dtype=torch.long)
    graph = gradient_graph(model, "logit", example)
    save_onnx(graph, (example, target), path, ["x", "target"], ["logits", "grad"])
    return OnnxClassifier(path, "logit", 3, Runtime())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("in_channels", "pool", "kernel", "size", "bias", "relu"),
    [
        (1, 2, 3, 8, True, True),  # the image's channels: backward at the pooled size
        (3, 2, 3, 9, True, True),  # the pool drops the last row and column
        (8, 2, 3, 9, True, True),  # a multiple of 8 channels: unpooled, blocked convolution
        (8, 3, 5, 10, False, False),  # 3x3 windows, a 5x5 kernel, no bias, no ReLU
        (2, 3, 5, 11, True, True),
    ],
)
def test_gradients_match_autograd_on_the_unfused_model(
    in_channels: int, pool: int, kernel: int, size: int, bias: bool, relu: bool, tmp_path: Path
) -> None:
    torch.manual_seed(in_channels + pool)
    model = _stack(in_channels, pool, kernel, bias, relu)
    model(torch.rand(2, in_channels, size, size))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model.eval()
    onnx_classifier = _exported(model, torch.rand(2, in_channels, size, size), tmp_path / "g.onnx")
    reference = tig.TorchClassifier(model)
    for batch in (1, 5):
        x = _inputs(batch, in_channels, size, batch)
        target = torch.arange(batch) % 3
        logits, grad = onnx_classifier.logits_and_grad(x, target)
        ref_logits, ref_grad = reference.logits_and_grad(x, target)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_only_runs_that_fit_are_fused_and_the_model_is_left_alone() -> None:
    fits = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Identity(), nn.ReLU(), nn.MaxPool2d(2))
    fused = fuse_conv_max_pool(fits)
    assert [type(m) for m in fused] == [ConvMaxPool2d, nn.Identity, nn.ReLU, nn.Identity]
    assert isinstance(fits[0], nn.Conv2d), "the caller's model must not change"
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(fused(x), fits(x), rtol=0, atol=0)

    shared = nn.Conv2d(1, 4, 3, padding=1)
    unfit = {
        "stride": [nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.MaxPool2d(2)],
        "too little padding": [nn.Conv2d(1, 4, 3), nn.MaxPool2d(2)],
        "overlapping windows": [nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(3, stride=2)],
        "non-monotone between": [nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)],
        "two ReLUs": [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.ReLU(), nn.MaxPool2d(2)],
        "convolution used twice": [shared, nn.MaxPool2d(2), shared],
    }
    for why, layers in unfit.items():
        kept = fuse_conv_max_pool(nn.Sequential(*layers))
        assert not any(isinstance(m, ConvMaxPool2d) for m in kept.modules()), why


def test_the_demo_cnn_gradient_graph_has_no_full_size_pooling(tmp_path: Path) -> None:
    """What explain runs: both conv-pool stages of the demo CNN fused, so the exported graph
    has no ``MaxPool`` and its convolutions run at the pooled size (stride 2)."""
    model = SmallCNN((1, 8, 8), 3).eval()
    example = torch.rand(2, 1, 8, 8)
    _exported(model, example, tmp_path / "g.onnx")
    nodes = onnx.load(tmp_path / "g.onnx").graph.node
    ops = [node.op_type for node in nodes]
    assert "MaxPool" not in ops
    strided = [
        node for node in nodes
        if node.op_type == "Conv"
        and any(a.name == "strides" and list(a.ints) == [2, 2] for a in node.attribute)
    ]  # fmt: skip
    assert len(strided) == 8  # four window positions for each of the two stages
