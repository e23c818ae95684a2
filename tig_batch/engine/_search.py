"""The tangentially aligned base-point: ``a* = argmax_a mu(IG(x; a))`` over ``[lo, hi]^d``,
by default subject to keeping half of the zero base-point's output gap.

Batched over images: every iteration runs the still-active images through one IG evaluation,
measures their output gap and takes one step, with no per-image loop. Three optimisers share
that loop:

- ``surrogate`` (ours, the default): with the path gradient ``G`` frozen, IG is linear in the
  base-point and the gap constraint is a half-space, so maximising ``mu`` is a small problem
  per image with no model calls (see ``_surrogate``). A few projected ascent steps solve it;
  the search moves ``damping`` of the way to the solution and refreshes ``G``. The gap the
  step aims for falls from the zero base-point's to the required one over the first
  ``anneal`` of the iterations, so the search follows the alignment-gap frontier down.
- ``ascent``: projected gradient ascent on ``mu`` (the paper's approach), with the
  frozen-path or the exact gradient and a fixed or per-image adaptive step length;
- ``projection`` (ours): the frozen-path solution without the gap constraint in closed form,
  ``a = x - P_T IG / G`` (clipped to the value range); the step moves ``damping`` of the way.

Every iterate is offered to the alignment-gap frontier (``_frontier``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, SecondOrderClassifier
from tig_batch.engine._ascent import ascent_step
from tig_batch.engine._baselines import BaselineKind, ValueRange, make_baselines
from tig_batch.engine._exact import alignment_gradient
from tig_batch.engine._frontier import Frontier
from tig_batch.engine._ig import (
    Target,
    explained_outputs,
    integrate,
    reference_gaps,
    resolve_target,
)
from tig_batch.engine._projection import IGProjection
from tig_batch.engine._quadrature import Rule, quadrature
from tig_batch.engine._surrogate import SurrogateSteps
from tig_batch.engine._tangent import TangentSpace
from tig_batch.kernels.dispatch import tangential_step

OPTIMIZERS = ("surrogate", "ascent", "projection")


@dataclass(frozen=True)
class BaselineSearch:
    """Settings of the base-point search. Defaults are ours where the paper is silent.

    The default problem is constrained: maximise ``mu`` keeping at least ``min_gap`` (0.5) of
    the zero base-point's output gap, since an explanation of almost no change in the output
    explains nothing. ``min_gap=0`` is the paper's unconstrained problem ("paper mode"), whose
    searches reach a high ``mu`` by moving the base-point next to the input.

    - ``optimizer``: ``surrogate`` (solves the frozen-path problem with the gap constraint
      each step), ``ascent`` (the paper's projected gradient ascent) or ``projection`` (the
      unconstrained frozen-path solution in closed form); see the module docstring.
    - ``gradient``: ``frozen-path`` (first derivatives only, exact almost everywhere for ReLU
      networks explaining a logit) or ``exact`` (ascent only: differentiates through the
      quadrature; needs a :class:`~tig_batch.backends.SecondOrderClassifier`, i.e. the torch
      backend).
    - ``n_iterations`` steps from the ``init`` base-point kind (a random kind is seeded per
      image by the run's seed: :func:`optimal_baselines`'s ``seed``), each one IG evaluation
      with the ``n_steps``-node ``method`` rule. That quadrature only has to rank base-points,
      so it can be far coarser than the final attribution's.
    - ``damping`` (``surrogate``, ``projection``): the fraction of the way to the frozen-path
      solution moved per step, in (0, 1]. ``inner_iterations`` (``surrogate``): ascent steps on
      the frozen-path problem per search step. ``anneal`` (``surrogate``): the fraction of the
      iterations over which the gap aimed for falls from the zero base-point's to ``min_gap``
      (0: aim for ``min_gap`` from the start).
    - ``lr`` (``ascent``): the step length (l2, in input units, when ``normalize_step``; else
      the plain gradient's multiplier). ``adaptive_lr``: per-image step lengths, grown by
      ``lr_growth`` after a step that raised the image's ``mu`` and cut by ``lr_decay`` after
      one that lowered it (within ``[lr / 100, lr * 100]``).
    - ``target_mu``: an image stops once its ``mu`` reaches this; ``keep_best``: return the
      best iterate by ``mu`` among those meeting ``min_gap`` rather than the last.
    - ``min_gap``: the output gap ``f_c(x) - f_c(a)`` every kept iterate must reach (the
      starting point is kept only as a last resort, and flagged); ``degenerate_gap``: results
      whose gap falls below it are flagged degenerate. Both are fractions of the zero
      base-point's gap when ``gap_relative`` (then in [0, 1)), else absolute values.
    """

    gradient: Literal["frozen-path", "exact"] = "frozen-path"
    optimizer: Literal["surrogate", "ascent", "projection"] = "surrogate"
    init: BaselineKind = "zero"
    lr: float = 0.5
    damping: float = 0.25
    inner_iterations: int = 5
    anneal: float = 0.5
    adaptive_lr: bool = False
    lr_growth: float = 1.2
    lr_decay: float = 0.5
    n_iterations: int = 60
    n_steps: int = 2
    method: Rule = "midpoint"
    normalize_step: bool = True
    target_mu: float | None = None
    keep_best: bool = True
    min_gap: float = 0.5
    degenerate_gap: float = 0.1
    gap_relative: bool = True

    def __post_init__(self) -> None:
        if self.gradient not in ("frozen-path", "exact"):
            raise ValueError(f"gradient must be 'frozen-path' or 'exact', got {self.gradient!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.optimizer != "ascent" and self.gradient == "exact":
            raise ValueError(
                f"optimizer={self.optimizer!r} works on the frozen-path problem; it takes no "
                "exact gradient (use gradient='frozen-path' or optimizer='ascent')"
            )
        if self.optimizer != "ascent" and self.adaptive_lr:
            raise ValueError("adaptive_lr adapts ascent steps; it needs optimizer='ascent'")
        if self.n_iterations < 0 or self.lr < 0 or self.inner_iterations < 0:
            raise ValueError("n_iterations, inner_iterations and lr must be non-negative")
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping}")
        if not 0 <= self.anneal <= 1:
            raise ValueError(f"anneal must be in [0, 1], got {self.anneal}")
        if self.lr_growth < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("lr_growth must be >= 1 and lr_decay in (0, 1]")
        for name in ("min_gap", "degenerate_gap"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
            if self.gap_relative and value >= 1:
                raise ValueError(
                    f"{name} is a fraction of the zero base-point's output gap, so it must be "
                    f"below 1, got {value} (gap_relative=False takes absolute gaps)"
                )

    @property
    def constrained(self) -> bool:
        """Whether kept iterates must reach ``min_gap`` (False: the paper's problem)."""
        return self.min_gap > 0


@dataclass(frozen=True)
class SearchResult:
    """The kept base-point per image and what it yields, measured with the search's quadrature.

    ``frontier`` (B, F) holds, per image, the best ``mu`` among the iterates whose output gap
    reached each fraction of ``FRONTIER_GAP_FRACTIONS`` of the zero base-point's gap (NaN where
    none did); it is measured with the search's quadrature too.
    """

    baselines: torch.Tensor  # (B, C, H, W), inside the value range
    alignment: torch.Tensor  # mu of IG from the kept base-point (B,)
    output_gap: torch.Tensor  # f_c(x) - f_c(a*) (B,)
    distance: torch.Tensor  # ||x - a*|| (B,)
    iterations: torch.Tensor  # steps taken per image (B,)
    degenerate: torch.Tensor  # gap below the threshold, or no iterate met min_gap (B,) bool
    n_gradient_evaluations: int  # samples differentiated, second-order ones included
    reference_gap: torch.Tensor  # f_c(x) - f_c(zero base-point) (B,)
    frontier: torch.Tensor  # (B, len(FRONTIER_GAP_FRACTIONS))


def optimal_baselines(
    model: Classifier,
    inputs: torch.Tensor,
    tangent: TangentSpace,
    target: Target = None,
    value_range: ValueRange = (0.0, 1.0),
    search: BaselineSearch = BaselineSearch(),
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    seed: int = 0,
) -> SearchResult:
    """Search each image's base-point for the IG explanation best aligned with its tangent space.

    Pass the result's ``baselines`` to :func:`integrated_gradients` for the final attribution.
    ``seed`` and ``sample_ids`` seed a random ``search.init`` per image, as
    :func:`make_baselines` does.
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
    reference_gap = reference_gaps(model, inputs, target, value_range)
    scale = reference_gap if search.gap_relative else torch.ones_like(f_x)
    min_gap = _min_gaps(search, scale)
    aims = _GapAims(search, reference_gap, min_gap)

    init = make_baselines(search.init, inputs, value_range, seed=seed, sample_ids=sample_ids)
    a = init.flatten(1).clone()
    best = _Best(a.clone(), f_x)
    frontier = Frontier(len(x), f_x)
    iterations = torch.zeros(len(x), dtype=torch.long, device=x.device)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    step_size = _StepSize(search, f_x)
    surrogate = SurrogateSteps(x, a, value_range, search.damping, search.inner_iterations)
    evaluations = 0
    for step in range(search.n_iterations + 1):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        x_rows, a_rows = x[rows].view(-1, *inputs.shape[1:]), a[rows].view(-1, *inputs.shape[1:])
        ig = integrate(model, x_rows, a_rows, target[rows], rule, internal_batch_size, basis[rows])
        evaluations += rows.numel() * len(rule)
        gap = f_x[rows] - explained_outputs(model, a_rows, target[rows])
        allowed = gap >= min_gap[rows]
        best.offer(rows, a[rows], ig.alignment, gap, allowed, search.keep_best)
        frontier.offer(rows, ig.alignment, _fraction(gap, reference_gap[rows]))
        if step == search.n_iterations:
            break
        if search.target_mu is not None:
            active[rows[ig.alignment >= search.target_mu]] = False
        if search.optimizer == "surrogate":
            new_a = surrogate.propose(
                rows, x[rows], a[rows], ig.mean_gradient, ig.attribution_sum, basis[rows], gap,
                aims.at(step, rows), allowed,
            )  # fmt: skip
        elif search.optimizer == "projection":
            new_a = projection_step(x[rows], a[rows], ig, basis[rows], search.damping, value_range)
        elif search.gradient == "exact":
            grad = alignment_gradient(
                model, x_rows, a_rows, target[rows], basis[rows], rule, ig, internal_batch_size
            )
            evaluations += 2 * rows.numel() * len(rule)
            lr = step_size.update(rows, ig.alignment)
            new_a = ascent_step(a[rows], grad, lr, value_range, search.normalize_step)
        else:
            new_a = tangential_step(
                ig.attributions, ig.mean_gradient, basis[rows], ig.projection, a[rows],
                step_size.update(rows, ig.alignment), value_range, search.normalize_step,
            )  # fmt: skip
        moving = active[rows]
        a[rows[moving]] = new_a[moving]
        iterations[rows[moving]] += 1

    return SearchResult(
        baselines=best.baselines.view_as(inputs),
        alignment=best.alignment,
        output_gap=best.gap,
        distance=torch.linalg.vector_norm(x - best.baselines, dim=1),
        iterations=iterations,
        degenerate=(best.gap < search.degenerate_gap * scale.clamp_min(0)) | ~best.allowed,
        n_gradient_evaluations=evaluations,
        reference_gap=reference_gap,
        frontier=frontier.best,
    )


def _min_gaps(search: BaselineSearch, scale: torch.Tensor) -> torch.Tensor:
    """The gap each image's kept iterates must reach; ``-inf`` where none is required: in
    paper mode, and, for a relative ``min_gap``, where the zero base-point explains no
    positive change (a share of it means nothing there)."""
    if not search.constrained:
        return torch.full_like(scale, -torch.inf)
    return torch.where(scale > 0, search.min_gap * scale, -torch.inf)


def _fraction(gap: torch.Tensor, reference_gap: torch.Tensor) -> torch.Tensor:
    """``gap / reference_gap``, NaN where the zero base-point's gap is not positive."""
    return torch.where(reference_gap > 0, gap / reference_gap, torch.nan)


class _GapAims:
    """The gap the ``surrogate`` step aims for: from the zero base-point's down to ``min_gap``.

    Over the first ``anneal`` of the iterations the aim falls linearly from
    ``max(reference_gap, min_gap)`` to ``min_gap``; where no gap is required it falls to zero,
    so the surrogate never aims for a negative gap.
    """

    def __init__(
        self, search: BaselineSearch, reference_gap: torch.Tensor, min_gap: torch.Tensor
    ) -> None:
        self.end = min_gap.clamp_min(0)
        self.start = torch.maximum(reference_gap, self.end)
        self.steps = search.anneal * search.n_iterations

    def at(self, step: int, rows: torch.Tensor) -> torch.Tensor:
        """The aimed-for gap of ``rows`` at search step ``step``."""
        remaining = max(0.0, 1.0 - step / self.steps) if self.steps > 0 else 0.0
        return self.end[rows] + remaining * (self.start[rows] - self.end[rows])


def projection_step(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    ig: IGProjection,
    basis: torch.Tensor,
    damping: float,
    value_range: ValueRange,
) -> torch.Tensor:
    """One ``projection`` step (B, d): ``a + damping * (clip(x - P_T v / G) - a)``.

    With ``G`` frozen, ``v = G * (x - a)`` can take any value where ``G != 0``, so the closest
    fully tangential explanation ``P_T v`` is reached by ``a = x - P_T v / G``; where ``G = 0``
    the base-point cannot change the explanation and stays. All vectors flattened to (B, d).
    """
    if ig.projection is None:
        raise ValueError("projection_step needs the IG evaluation's tangent projection")
    tangential = torch.bmm(basis, ig.projection[:, :, None]).squeeze(2)
    g = ig.mean_gradient
    movable = g != 0
    solved = inputs - tangential / torch.where(movable, g, torch.ones_like(g))
    target = torch.where(movable, solved.clamp(*value_range), baselines)
    return baselines + damping * (target - baselines)


class _StepSize:
    """Ascent step lengths per image: fixed ``lr``, or adapted to each image's progress."""

    def __init__(self, search: BaselineSearch, like: torch.Tensor) -> None:
        self.search = search
        self.lr = torch.full_like(like, search.lr)
        self.previous = torch.full_like(like, torch.nan)

    def update(self, rows: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor | float:
        """The step length for ``rows`` now that their current ``mu`` is ``alignment``."""
        if not self.search.adaptive_lr:
            return self.search.lr
        previous = self.previous[rows]
        factor = torch.ones_like(alignment)
        factor = torch.where(alignment > previous, self.search.lr_growth, factor)
        factor = torch.where(alignment < previous, self.search.lr_decay, factor)
        lr = (self.lr[rows] * factor).clamp(self.search.lr / 100, self.search.lr * 100)
        self.lr[rows], self.previous[rows] = lr, alignment
        return lr


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
