"""The ``surrogate`` search step: maximise ``mu`` on the frozen-path model of IG, no model calls.

Hold the mean path gradient ``G`` of the current base-point ``a`` fixed. Then the explanation
from any base-point ``a' = x - delta`` is ``v = G * delta`` and, by completeness, its output
gap is about ``gap(a) + G . (delta - (x - a))``. The constrained problem becomes a small one
per image, in ``delta`` only:

    maximise mu(G * delta)  subject to  x - hi <= delta <= x - lo,  G . delta >= bound

which :func:`surrogate_ascent` solves approximately by a few projected, normalised gradient
ascent steps in ``delta``, each projected exactly onto the box and the half-space by
:func:`project_box_halfspace`. Ascent in ``delta`` rather than in ``v`` weights each pixel's
move by its gradient, so the solution leans on pixels whose change the frozen model predicts
well, not on huge moves of pixels with tiny gradients; the search then moves only part of the
way to it (``damping``) and refreshes ``G``.
"""

from __future__ import annotations

import torch

from tig_batch.engine._ascent import mu_cotangent

#: Newton steps on the half-space multiplier; exact once inside the last linear piece.
PROJECTION_STEPS = 10
#: Bounds on the inner ascent's per-image step length, relative to ``||delta||``.
_STEP_RANGE = (1e-3, 1.0)


def project_box_halfspace(
    points: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    normal: torch.Tensor,
    bound: torch.Tensor,
    steps: int = PROJECTION_STEPS,
) -> torch.Tensor:
    """The closest point (B, d) to each row of ``points`` with ``lower <= p <= upper`` and
    ``normal . p >= bound``.

    The projection is ``clip(y + lam * normal)`` for the smallest ``lam >= 0`` that meets the
    half-space; ``s(lam) = normal . clip(y + lam * normal)`` is non-decreasing and piecewise
    linear, so a bracketed Newton search on ``lam`` finds it in a few steps. Rows whose box
    cannot meet the bound get the box point that comes closest (the maximiser of
    ``normal . p``).
    """
    clipped = torch.minimum(torch.maximum(points, lower), upper)
    short = (normal * clipped).sum(1) < bound
    if not bool(short.any()):
        return clipped
    y, lo, hi, g, c = points[short], lower[short], upper[short], normal[short], bound[short]
    lam = torch.zeros_like(c)
    below, above = torch.zeros_like(c), torch.full_like(c, torch.inf)
    for _ in range(steps):
        moved = y + lam[:, None] * g
        value = (g * torch.minimum(torch.maximum(moved, lo), hi)).sum(1)
        slope = (g * g * ((moved > lo) & (moved < hi))).sum(1)
        reached = value >= c
        below = torch.where(reached, below, torch.maximum(below, lam))
        above = torch.where(reached, torch.minimum(above, lam), above)
        newton = lam + (c - value) / slope.clamp_min(torch.finfo(slope.dtype).tiny)
        bisect = torch.where(torch.isfinite(above), 0.5 * (below + above), 2 * below + 1)
        lam = torch.where((slope > 0) & (newton > below) & (newton < above), newton, bisect)
    # an unconverged row takes the end of its bracket that meets the bound
    reached = (g * torch.minimum(torch.maximum(y + lam[:, None] * g, lo), hi)).sum(1) >= c
    lam = torch.where(~reached & torch.isfinite(above), above, lam)
    result = torch.minimum(torch.maximum(y + lam[:, None] * g, lo), hi)
    unreachable = torch.maximum(g * lo, g * hi).sum(1) < c
    result[unreachable] = torch.where(g[unreachable] > 0, hi[unreachable], lo[unreachable])
    clipped[short] = result
    return clipped


def alignment_and_cotangent(
    attributions: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu`` (B,) and ``dmu/dv`` (B, d) of explanations (B, d); ``mu`` is 0 where ``v = 0``."""
    projection = torch.bmm(attributions[:, None, :], basis).squeeze(1)
    v_norm = torch.linalg.vector_norm(attributions, dim=1)
    mu = torch.linalg.vector_norm(projection, dim=1) / torch.where(v_norm > 0, v_norm, 1.0)
    return mu, mu_cotangent(attributions, basis, projection)


def surrogate_ascent(
    delta: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    mean_gradient: torch.Tensor,
    bound: torch.Tensor | None,
    basis: torch.Tensor,
    iterations: int,
    step: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximise ``mu(G * delta)`` over the box (and ``G . delta >= bound`` unless None).

    Starts from ``delta`` projected onto the feasible set and takes ``iterations`` normalised
    ascent steps of per-image length ``step * ||delta||``, each kept only if it raises ``mu``
    (the length then grows by 1.2, else halves). Returns the best ``delta``, its ``mu`` and
    the adapted step lengths, so the next call can start where this one stopped.
    """
    g = mean_gradient
    no_bound = bound is None

    def project(points: torch.Tensor) -> torch.Tensor:
        if no_bound:
            return torch.minimum(torch.maximum(points, lower), upper)
        return project_box_halfspace(points, lower, upper, g, bound)

    delta = project(delta)
    mu, cotangent = alignment_and_cotangent(g * delta, basis)
    ascent = g * cotangent
    for _ in range(iterations):
        length = step * torch.linalg.vector_norm(delta, dim=1).clamp_min(_STEP_RANGE[0])
        norm = torch.linalg.vector_norm(ascent, dim=1).clamp_min(torch.finfo(g.dtype).tiny)
        candidate = project(delta + (length / norm)[:, None] * ascent)
        mu_c, cotangent_c = alignment_and_cotangent(g * candidate, basis)
        better = mu_c > mu
        delta = torch.where(better[:, None], candidate, delta)
        ascent = torch.where(better[:, None], g * cotangent_c, ascent)
        mu = torch.where(better, mu_c, mu)
        step = torch.where(better, step * 1.2, step * 0.5).clamp(*_STEP_RANGE)
    return delta, mu, step


#: The linearised gap must clear the required gap by this factor: the real gap drifts from its
#: linearisation as ``G`` changes along the way.
GAP_MARGIN = 1.05
#: An image whose real gap broke the constraint moves this fraction of the way back to its
#: last base-point that met it.
RETREAT = 0.5
#: The inner ascent's first step length, relative to ``||delta||``.
INITIAL_STEP = 0.3


class SurrogateSteps:
    """The ``surrogate`` optimiser's per-image state across search steps.

    Each image keeps its last surrogate solution (the next solve starts there, so a few inner
    iterations per step suffice), its inner step length, and its last base-point that met the
    gap constraint (where it retreats to when a step breaks the constraint).
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        baselines: torch.Tensor,
        value_range: tuple[float, float],
        damping: float,
        iterations: int,
    ) -> None:
        lo, hi = value_range
        self.lower, self.upper = inputs - hi, inputs - lo
        self.solution = inputs - baselines
        self.step = torch.full_like(inputs[:, 0], INITIAL_STEP)
        self.feasible = baselines.clone()
        self.damping = damping
        self.iterations = iterations

    def propose(
        self,
        rows: torch.Tensor,
        inputs: torch.Tensor,
        baselines: torch.Tensor,
        mean_gradient: torch.Tensor,
        attribution_sum: torch.Tensor,
        basis: torch.Tensor,
        gap: torch.Tensor,
        required: torch.Tensor | None,
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        """The next base-points (len(rows), d) of ``rows``, whose current ones are ``baselines``.

        ``required`` is the gap this step aims for (None: no gap constraint); ``allowed``
        says which current base-points meet the search's constraint.
        """
        bound = None
        if required is not None:  # gap(a') ~ gap + G . delta' - sum(v) >= margin * required
            bound = GAP_MARGIN * required - gap + attribution_sum
        solution, _, step = surrogate_ascent(
            self.solution[rows], self.lower[rows], self.upper[rows], mean_gradient, bound,
            basis, self.iterations, self.step[rows],
        )  # fmt: skip
        self.solution[rows], self.step[rows] = solution, step
        self.feasible[rows[allowed]] = baselines[allowed]
        forward = baselines + self.damping * (inputs - solution - baselines)
        back = baselines + RETREAT * (self.feasible[rows] - baselines)
        return torch.where(allowed[:, None], forward, back)
