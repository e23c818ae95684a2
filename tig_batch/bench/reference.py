"""A paper-style tangential IG, the yardstick ``tig-batch bench e2e`` measures the engine against.

What a paper's research code would do, written without the engine's search: one image at a
time, the base-point a ``requires_grad`` tensor, IG by the quadrature built with
``create_graph=True``, ``mu = ||U^T v|| / ||v||``, the exact ``dmu/da`` by double backward,
``torch.optim.Adam`` ascending ``mu``, projection onto the value range after every step, and
the best iterate by ``mu`` kept; it explains the target's logit. Only the tangent basis ``U``
comes from outside, so both sides explain against the same tangent space; the midpoint rule
is built here, as Captum's ``riemann_middle`` is.

It is held to the same gap rule as the engine: with ``min_gap`` > 0 only iterates whose
output gap ``f_c(x) - f_c(a)`` keeps that fraction of the zero base-point's are kept (a forward
pass per iterate), so both sides solve the same constrained problem.

Settings (:class:`ReferenceSearch`) were chosen by a sweep of Adam's learning rate and the
iterations (:func:`reference_sweep`; the table is in ``docs/performance.md``), so the
reference is no strawman.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ReferenceSearch:
    """Settings of the paper-style search: Adam's ``lr``, ``n_iterations`` steps, ``n_steps``
    midpoint nodes inside the loop, the value range to project onto, and ``min_gap``, the
    share of the zero base-point's output gap a kept iterate must keep (0: the paper's
    unconstrained problem)."""

    lr: float = 0.1
    n_iterations: int = 100
    n_steps: int = 4
    value_range: tuple[float, float] = (0.0, 1.0)
    min_gap: float = 0.5


@dataclass(frozen=True)
class ReferenceResult:
    """Per image: the kept base-point, its ``mu`` (inner quadrature) and the evaluations spent.

    ``n_gradient_evaluations`` counts model gradients as the engine does: a double-backward
    evaluation of K nodes counts 3K, a plain one K.
    """

    baselines: torch.Tensor  # (B, C, H, W)
    alignment: torch.Tensor  # (B,)
    n_gradient_evaluations: int
    trace: torch.Tensor  # (B, n_iterations + 1): best mu so far after each evaluation


def midpoint_rule(n_steps: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Nodes ``(k + 1/2) / K`` and weights ``1/K``: Captum's ``riemann_middle``."""
    nodes = (torch.arange(n_steps, dtype=torch.float64) + 0.5) / n_steps
    return nodes.to(dtype), torch.full((n_steps,), 1.0 / n_steps, dtype=dtype)


def path_integral(
    module: nn.Module,
    image: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    create_graph: bool = True,
) -> torch.Tensor:
    """IG of one image (C, H, W) from ``baseline``; with ``create_graph`` it stays
    differentiable with respect to ``baseline`` (for the double backward)."""
    path = baseline[None] + nodes.view(-1, 1, 1, 1) * (image - baseline)[None]
    if not path.requires_grad:  # a constant base-point: the path gradients are still needed
        path = path.requires_grad_(True)
    value = module(path)[:, target].sum()
    (grads,) = torch.autograd.grad(value, path, create_graph=create_graph)
    return (image - baseline) * (weights.view(-1, 1, 1, 1) * grads).sum(0)


def tangential_alignment(ig: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``mu = ||U^T v|| / ||v||`` of one explanation against its basis (d, r)."""
    v = ig.flatten()
    return torch.linalg.vector_norm(basis.T @ v) / torch.linalg.vector_norm(v)


def alignment_gradient(
    module: nn.Module,
    image: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    basis: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu`` and the exact ``dmu/da`` (C, H, W) at ``baseline``, by double backward."""
    a = baseline.detach().requires_grad_(True)
    with torch.enable_grad():
        ig = path_integral(module, image, a, target, nodes, weights)
        mu = tangential_alignment(ig, basis)
        (grad,) = torch.autograd.grad(mu, a)
    return mu.detach(), grad


def _search_one(
    module: nn.Module,
    image: torch.Tensor,
    target: int,
    basis: torch.Tensor,
    settings: ReferenceSearch,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam on ``-mu`` from the zero base-point; returns the best base-point that keeps
    ``min_gap`` of the zero base-point's gap (the start, if none does better), its mu, the
    trace."""
    nodes, weights = midpoint_rule(settings.n_steps, image.dtype)
    lo, hi = settings.value_range

    def explained(point: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(point[None])[0, target]

    a = torch.full_like(image, lo).requires_grad_(True)
    f_x = explained(image)
    required = settings.min_gap * max(float(f_x - explained(a.detach())), 0.0)
    optimizer = torch.optim.Adam([a], lr=settings.lr)
    best_a, best_mu, trace = a.detach().clone(), torch.tensor(-1.0), []
    for step in range(settings.n_iterations + 1):
        with torch.enable_grad():
            last = step == settings.n_iterations
            ig = path_integral(module, image, a, target, nodes, weights, create_graph=not last)
            mu = tangential_alignment(ig, basis)
            if not last:  # Adam minimises: ascend mu by descending -mu
                (a.grad,) = torch.autograd.grad(-mu, a)
        kept = not settings.min_gap or float(f_x - explained(a.detach())) >= required
        if kept and torch.isfinite(mu) and mu > best_mu:
            best_a, best_mu = a.detach().clone(), mu.detach()
        trace.append(float(best_mu))
        if last:
            break
        optimizer.step()
        with torch.no_grad():
            a.clamp_(lo, hi)
    return best_a, best_mu, torch.tensor(trace)


def reference_tangential(
    module: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    basis: torch.Tensor,
    settings: ReferenceSearch = ReferenceSearch(),
) -> ReferenceResult:
    """The paper-style base-point search, image by image (inputs (B, C, H, W), basis (B, d, r))."""
    module = module.eval()
    kept, mus, traces = [], [], []
    for i in range(len(inputs)):
        a, mu, trace = _search_one(module, inputs[i], int(target[i]), basis[i], settings)
        kept.append(a)
        mus.append(mu)
        traces.append(trace)
    k, n = settings.n_steps, settings.n_iterations
    return ReferenceResult(
        torch.stack(kept), torch.stack(mus), len(inputs) * (3 * k * n + k), torch.stack(traces)
    )


def reference_ig(
    module: nn.Module, inputs: torch.Tensor, baselines: torch.Tensor, target: torch.Tensor,
    n_steps: int = 50,
) -> torch.Tensor:  # fmt: skip
    """The final attribution, image by image, with ``n_steps`` midpoint nodes."""
    nodes, weights = midpoint_rule(n_steps, inputs.dtype)
    out = []
    for i in range(len(inputs)):
        with torch.enable_grad():
            ig = path_integral(
                module.eval(), inputs[i], baselines[i], int(target[i]), nodes, weights, False
            )
        out.append(ig.detach())
    return torch.stack(out)


def reference_sweep(
    module: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    basis: torch.Tensor,
    lrs: Sequence[float] = (0.003, 0.01, 0.03, 0.1),
    iterations: Sequence[int] = (50, 100, 200),
    n_steps: int = 4,
    min_gap: float = 0.5,
) -> dict[float, dict[int | str, float]]:
    """Mean kept ``mu`` per learning rate after each number of iterations (one run per lr).

    Keeping the best iterate makes the trace of one long run give every shorter run's answer.
    """
    table: dict[float, dict[int | str, float]] = {}
    for lr in lrs:
        start = time.perf_counter()
        run = reference_tangential(
            module,
            inputs,
            target,
            basis,
            ReferenceSearch(lr=lr, n_iterations=max(iterations), n_steps=n_steps, min_gap=min_gap),
        )
        table[lr] = {n: float(run.trace[:, n].mean()) for n in iterations}
        table[lr]["seconds"] = time.perf_counter() - start
    return table
