"""Quadrature rules on [0, 1] for the IG path integral.

Every rule's weights sum to exactly 1, so a constant gradient integrates exactly. (Captum's
``riemann_trapezoid`` weights sum to ``1 - 1/n``; this module does not copy that.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

Rule = Literal["left", "right", "midpoint", "trapezoid", "gauss-legendre"]
RULES: tuple[str, ...] = get_args(Rule)


@dataclass(frozen=True)
class Quadrature:
    """Nodes ``t_k`` and weights ``w_k`` with ``integral_0^1 h(t) dt ~= sum_k w_k h(t_k)``."""

    nodes: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return self.nodes.numel()

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Quadrature:
        return Quadrature(self.nodes.to(device, dtype), self.weights.to(device, dtype))


def quadrature(method: str, n_steps: int, dtype: torch.dtype = torch.float64) -> Quadrature:
    """Build the ``n_steps``-node rule ``method`` (one of :data:`RULES`).

    Nodes and weights are computed in float64 and cast once, so a chunked run slices the same
    numbers as an unchunked one.
    """
    if method not in RULES:
        raise ValueError(f"unknown quadrature method {method!r}; choose one of {', '.join(RULES)}")
    if n_steps < 1 or (method == "trapezoid" and n_steps < 2):
        minimum = 2 if method == "trapezoid" else 1
        raise ValueError(f"method {method!r} needs n_steps >= {minimum}, got {n_steps}")
    k = np.arange(n_steps, dtype=np.float64)
    weights = np.full(n_steps, 1.0 / n_steps)
    if method == "left":
        nodes = k / n_steps
    elif method == "right":
        nodes = (k + 1) / n_steps
    elif method == "midpoint":
        nodes = (k + 0.5) / n_steps
    elif method == "trapezoid":
        nodes = k / (n_steps - 1)
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2
    else:
        x, w = np.polynomial.legendre.leggauss(n_steps)
        nodes, weights = (x + 1) / 2, w / 2
    return Quadrature(torch.tensor(nodes, dtype=dtype), torch.tensor(weights, dtype=dtype))
