"""The tangentially aligned base-point: projected gradient ascent on ``mu`` over the base-point.

``a* = argmax_a mu(IG(x; a))`` over ``[lo, hi]^d``, batched over images: every iteration runs
the still-active images through one IG evaluation and one step, with no per-image loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tig_batch.backends import Classifier, SecondOrderClassifier
from tig_batch.engine._baselines import BaselineKind, ValueRange, make_baselines, zero_baselines
from tig_batch.engine._ig import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    Target,
    explained_outputs,
    integrate,
    resolve_target,
)
from tig_batch.engine._quadrature import Quadrature, Rule, quadrature
from tig_batch.engine._tangent import TangentSpace
from tig_batch.kernels.dispatch import tangential_step
from tig_batch.kernels.ig_accumulate_project import IGProjection
from tig_batch.kernels.interpolate_path import interpolate_path_ref
from tig_batch.kernels.tangential_step import ascent_step_ref, mu_cotangent_ref


@dataclass(frozen=True)
class BaselineSearch:
    """Settings of the base-point search. Defaults are ours where the paper is silent.

    - ``gradient``: ``frozen-path`` (first derivatives only, exact almost everywhere for ReLU
      networks explaining a logit) or ``exact`` (differentiates through the quadrature; needs a
      :class:`~tig_batch.backends.SecondOrderClassifier`, i.e. the torch backend).
    - ``init``: the starting base-point kind; ``lr``: the step length (l2, in input units,
      when ``normalize_step``; else the plain gradient's multiplier); ``n_iterations`` steps.
    - ``n_steps``/``method``: the quadrature inside the loop (may be coarser than the final IG).
    - ``target_mu``: an image stops once its ``mu`` reaches this; ``keep_best``: return the
      best iterate by ``mu`` rather than the last.
    - ``min_gap``: iterates whose output gap ``f_c(x) - f_c(a)`` falls below it are never kept
      (the starting point is kept only as a last resort, and flagged).
      ``degenerate_gap``: results whose gap falls below it are flagged degenerate. Both are
      fractions of the zero base-point's gap when ``gap_relative``, else absolute values.
    """

    gradient: Literal["frozen-path", "exact"] = "frozen-path"
    init: BaselineKind = "zero"
    lr: float = 0.5
    n_iterations: int = 50
    n_steps: int = 16
    method: Rule = "midpoint"
    normalize_step: bool = True
    target_mu: float | None = None
    keep_best: bool = True
    min_gap: float | None = None
    degenerate_gap: float = 0.1
    gap_relative: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gradient not in ("frozen-path", "exact"):
            raise ValueError(f"gradient must be 'frozen-path' or 'exact', got {self.gradient!r}")
        if self.n_iterations < 0 or self.lr < 0:
            raise ValueError("n_iterations and lr must be non-negative")


@dataclass(frozen=True)
class SearchResult:
    """The kept base-point per image and what it yields, measured with the search's quadrature."""

    baselines: torch.Tensor  # (B, C, H, W), inside the value range
    alignment: torch.Tensor  # mu of IG from the kept base-point (B,)
    output_gap: torch.Tensor  # f_c(x) - f_c(a*) (B,)
    distance: torch.Tensor  # ||x - a*|| (B,)
    iterations: torch.Tensor  # ascent steps taken per image (B,)
    degenerate: torch.Tensor  # gap below the threshold, or no iterate met min_gap (B,) bool
    n_gradient_evaluations: int  # samples differentiated, second-order ones included


def optimal_baselines(
    model: Classifier,
    inputs: torch.Tensor,
    tangent: TangentSpace,
    target: Target = None,
    value_range: ValueRange = (0.0, 1.0),
    search: BaselineSearch = BaselineSearch(),
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> SearchResult:
    """Search each image's base-point for the IG explanation best aligned with its tangent space.

    Pass the result's ``baselines`` to :func:`integrated_gradients` for the final attribution.
    """
    if search.gradient == "exact" and not isinstance(model, SecondOrderClassifier):
        raise TypeError(
            "gradient='exact' needs second derivatives, which this backend cannot give; use "
            "the torch backend or gradient='frozen-path'"
        )
    target = resolve_target(model, inputs, target)
    x = inputs.flatten(1)
    basis = tangent.basis.to(inputs.dtype)
    rule = quadrature(search.method, search.n_steps).to(inputs.device, inputs.dtype)
    f_x = explained_outputs(model, inputs, target)
    scale = torch.ones_like(f_x)
    if search.gap_relative:
        scale = f_x - explained_outputs(model, zero_baselines(inputs, value_range), target)
    min_gap = torch.full_like(f_x, -torch.inf) if search.min_gap is None else search.min_gap * scale

    init = make_baselines(search.init, inputs, value_range, seed=search.seed, sample_ids=sample_ids)
    a = init.flatten(1).clone()
    best = _Best(a.clone(), f_x)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    evaluations = 0
    for step in range(search.n_iterations + 1):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        x_rows, a_rows = x[rows].view(-1, *inputs.shape[1:]), a[rows].view(-1, *inputs.shape[1:])
        ig = integrate(model, x_rows, a_rows, target[rows], rule, internal_batch_size, basis[rows])
        gap = f_x[rows] - explained_outputs(model, a_rows, target[rows])
        evaluations += rows.numel() * len(rule)
        best.offer(rows, a[rows], ig.alignment, gap, gap >= min_gap[rows], search.keep_best)
        if step == search.n_iterations:
            break
        if search.target_mu is not None:
            active[rows[ig.alignment >= search.target_mu]] = False
        if search.gradient == "exact":
            grad = alignment_gradient(
                model, x_rows, a_rows, target[rows], basis[rows], rule, ig, internal_batch_size
            )
            evaluations += 2 * rows.numel() * len(rule)
            new_a = ascent_step_ref(a[rows], grad, search.lr, value_range, search.normalize_step)
        else:
            new_a = tangential_step(
                ig.attributions, ig.mean_gradient, basis[rows], ig.projection, a[rows],
                search.lr, value_range, search.normalize_step,
            )  # fmt: skip
        moving = active[rows]
        a[rows[moving]] = new_a[moving]
        iterations[rows[moving]] += 1

    threshold = search.degenerate_gap * scale
    return SearchResult(
        baselines=best.baselines.view_as(inputs),
        alignment=best.alignment,
        output_gap=best.gap,
        distance=torch.linalg.vector_norm(x - best.baselines, dim=1),
        iterations=iterations,
        degenerate=(best.gap < threshold) | ~best.allowed,
        n_gradient_evaluations=evaluations,
    )


def alignment_gradient(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    basis: torch.Tensor,
    rule: Quadrature,
    ig: IGProjection,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    exact: bool = True,
) -> torch.Tensor:
    """``dmu/da`` (B, d) at ``baselines``, given their IG evaluation ``ig`` (with projection).

    The frozen-path gradient ``-G * dmu/dv`` holds the mean path gradient fixed; ``exact``
    adds the curvature term, which needs a :class:`SecondOrderClassifier`.
    """
    cotangent = mu_cotangent_ref(ig.attributions, basis, ig.projection)
    grad = -ig.mean_gradient * cotangent
    if exact:
        u = (inputs - baselines).flatten(1) * cotangent
        grad = grad + _curvature_term(
            model, inputs, baselines, target, rule, u, internal_batch_size
        )
    return grad


class _Best:
    """The best iterate so far per image: constraint-satisfying first, then highest ``mu``."""

    def __init__(self, baselines: torch.Tensor, like: torch.Tensor) -> None:
        self.baselines = baselines
        self.alignment = torch.full_like(like, torch.nan)
        self.gap = torch.full_like(like, torch.nan)
        self.allowed = torch.zeros_like(like, dtype=torch.bool)
        self.seen = torch.zeros_like(like, dtype=torch.bool)

    def offer(
        self,
        rows: torch.Tensor,
        baselines: torch.Tensor,
        alignment: torch.Tensor,
        gap: torch.Tensor,
        allowed: torch.Tensor,
        keep_best: bool,
    ) -> None:
        score = torch.nan_to_num(alignment, nan=-torch.inf)
        best_score = torch.nan_to_num(self.alignment[rows], nan=-torch.inf)
        better = (allowed & ~self.allowed[rows]) | (
            (allowed == self.allowed[rows]) & (score > best_score)
        )
        take = ~self.seen[rows] | (better if keep_best else allowed | ~self.allowed[rows])
        chosen = rows[take]
        self.baselines[chosen] = baselines[take]
        self.alignment[chosen] = alignment[take]
        self.gap[chosen] = gap[take]
        self.allowed[chosen] = allowed[take]
        self.seen[rows] = True


def _curvature_term(
    model: SecondOrderClassifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    rule: Quadrature,
    cotangent: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """``sum_k w_k (1 - t_k) H_k u``: what the exact gradient of ``mu`` adds to the frozen one.

    ``H_k`` is the Hessian of ``f_c`` at the k-th path point and ``u = (x - a) * dmu/dv``; by
    differentiating ``sum_k w_k <grad f_c(a + t_k (x - a)), u>`` with respect to ``a``.
    Zero almost everywhere for piecewise-linear networks explaining a logit.
    """
    n_images, n_nodes = inputs.shape[0], len(rule)
    per_call = max(1, internal_batch_size // n_nodes)
    node_chunk = n_nodes if per_call > 1 else internal_batch_size
    out = torch.zeros_like(cotangent)
    for start in range(0, n_images, per_call):
        rows = slice(start, start + per_call)
        for k0 in range(0, n_nodes, node_chunk):
            nodes, weights = rule.nodes[k0 : k0 + node_chunk], rule.weights[k0 : k0 + node_chunk]
            with torch.enable_grad():
                a = baselines[rows].detach().requires_grad_(True)
                path = interpolate_path_ref(inputs[rows], a, nodes)
                value = model.explained_output(path, target[rows].repeat_interleave(len(nodes)))
                (grad,) = torch.autograd.grad(value.sum(), path, create_graph=True)
                grad = grad.view(a.shape[0], len(nodes), -1)
                inner = (grad * weights[None, :, None] * cotangent[rows, None, :]).sum()
                if not inner.requires_grad:  # f_c is affine along the path: no curvature
                    continue
                (hvp,) = torch.autograd.grad(inner, a, allow_unused=True)
            if hvp is not None:
                out[rows] += hvp.flatten(1)
    return out
