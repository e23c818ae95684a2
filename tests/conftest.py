"""Tiny models and inputs shared by the engine tests (float64 unless a test says otherwise)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

# Triton fixes whether its own standard library (tl.sum, ...) is interpreted when it is first
# imported, and torch.onnx imports it early; so on a machine without a GPU, the interpreter
# must be on for the whole session, not switched on per test.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHAPE = (1, 8, 8)
D = 64
N_CLASSES = 5


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.5)
    return module.double().eval()


def relu_cnn(seed: int = 0) -> nn.Module:
    """Conv, ReLU, max-pool, linear: piecewise linear, so its logits have zero curvature a.e."""
    return _seeded(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, N_CLASSES),
        ),
        seed,
    )


def smooth_mlp(seed: int = 0) -> nn.Module:
    """A tanh network: smooth, with curvature everywhere."""
    return _seeded(
        nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, N_CLASSES)), seed
    )


def linear_model(seed: int = 0) -> nn.Module:
    return _seeded(nn.Sequential(nn.Flatten(), nn.Linear(D, N_CLASSES)), seed)


@pytest.fixture
def images() -> torch.Tensor:
    """Four 1x8x8 images in [0, 1]."""
    return torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
