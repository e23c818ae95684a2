"""The alignment-gap frontier figure: what alignment costs in output explained.

The tangential search keeps, per image, its best ``mu`` among the iterates that kept each
fraction of the zero base-point's output gap. Averaged over images, that is a curve of ``mu``
against the gap fraction; every other IG base-point is one point on the same axes (its own mean
gap fraction and mean ``mu``), and the gradient explainers, which have no base-point, are
horizontal lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tig_batch.pipeline import GRADIENT_METHODS, IG_METHODS, PATH_METHODS
from tig_batch.report._summary import Scores

#: Where the unconstrained column (any gap) is drawn on the gap-fraction axis.
_ANY_GAP_AT = -0.08
#: The path methods' colours (the ten default ones are taken by the frontier, the IG
#: base-points and the gradient explainers).
_PATH_COLOURS = ("black", "dimgray", "darkgoldenrod")


@dataclass(frozen=True)
class FrontierCurve:
    """Mean ``mu`` of the tangential search's best iterates per gap fraction, over images."""

    fractions: tuple[float, ...]  # -inf: the unconstrained column
    mean_mu: tuple[float, ...]
    counts: tuple[int, ...]  # images with an iterate at that gap fraction


def frontier_curve(scores: Scores) -> FrontierCurve | None:
    """The mean frontier of the files read, or None when none of them holds one."""
    if scores.frontier is None:
        return None
    finite = np.isfinite(scores.frontier)
    counts = finite.sum(0)
    sums = np.where(finite, scores.frontier, 0.0).sum(0)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return FrontierCurve(
        scores.frontier_fractions, tuple(float(m) for m in means), tuple(int(c) for c in counts)
    )


def frontier_figure(
    scores: Scores, out: Path, min_gap: float | None = None, paper_mode: Scores | None = None
) -> Path | None:
    """``alignment_gap_frontier.png``; None when the outputs hold no frontier (format 1).

    ``min_gap`` (a fraction of the zero base-point's gap), when the run was constrained,
    shades the gaps its search did not explore: there, the curve only repeats the best ``mu``
    found at ``min_gap`` or above. ``paper_mode``: outputs of the same images searched without
    the constraint, whose frontier is drawn too (dashed), with its final mean as a star.
    """
    curve = frontier_curve(scores)
    if curve is None:
        return None
    from tig_batch.report._figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(10.5, 5.6), layout="constrained")
    x = _draw_curve(ax, curve, scores.frontier.shape[0], repeats_below=min_gap or None)
    paper_curve = None if paper_mode is None else frontier_curve(paper_mode)
    if paper_curve is not None:
        _draw_curve(ax, paper_curve, paper_mode.frontier.shape[0], paper=True)
        gap = np.nanmean(paper_mode.gap_fraction("tangential"))
        mu = np.nanmean(paper_mode.alignment["tangential"])
        label = f"tangential, paper mode: mean gap {gap:.0%}, mean mu {mu:.2f}"
        ax.scatter(gap, mu, marker="*", s=110, zorder=3, color="C9", label=label)
    _draw_methods(ax, scores)
    if min_gap:
        ax.axvspan(0.0, min_gap, color="0.9", zorder=0)
        ax.text(min_gap / 2, 0.03, f"below min_gap {min_gap:g}: not\nsearched by the constrained "
                "run", ha="center", fontsize=8)  # fmt: skip
    ax.set_xlim(max(1.05, max(x) + 0.05), _ANY_GAP_AT - 0.06)  # large gaps on the left
    ticks = [f for f in x if f >= 0]
    ax.set_xticks([*ticks, _ANY_GAP_AT], [f"{f:.0%}" for f in ticks] + ["any"], fontsize=8)
    ax.set(ylim=(0, 1), xlabel="output gap kept, as a share of the zero base-point's",
           ylabel="mean alignment mu")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        "What alignment costs: tangential IG's best mu at each output gap kept\n"
        "(curve: each image's best search iterate; points: final explanations)",
        fontsize=10,
    )
    return save_figure(fig, out / "alignment_gap_frontier.png", dpi=110)


def _draw_curve(
    ax: Any, curve: FrontierCurve, n_images: int, paper: bool = False,
    repeats_below: float | None = None,
) -> list[float]:  # fmt: skip
    """A tangential frontier, each point labelled with its mean (and count when partial):
    solid for the run's search, dashed (labels below) for a paper-mode search. Points below
    ``repeats_below`` (a constrained search's ``min_gap``) repeat the one at it: unlabelled."""
    x = [f if math.isfinite(f) else _ANY_GAP_AT for f in curve.fractions]
    label = "tangential, paper mode" if paper else "tangential"
    ax.plot(x, curve.mean_mu, "--o" if paper else "-o", color="C9" if paper else "C0", lw=2,
            label=f"{label}: best mu at each gap")  # fmt: skip
    for f, xi, mu, n in zip(curve.fractions, x, curve.mean_mu, curve.counts, strict=True):
        if repeats_below is not None and f < repeats_below:
            continue
        note = f"{mu:.2f}" + ("" if n == n_images else f" (n={n})")
        ax.annotate(note, (xi, mu), xytext=(0, -12 if paper else 7), textcoords="offset points",
                    ha="center", fontsize=8)  # fmt: skip
    return x


def _draw_methods(ax: Any, scores: Scores) -> None:
    """IG base-points (squares) and the path methods (hollow triangles, so a base-point at
    the same place shows through) as points at their mean gap; gradient explainers and chance
    as lines."""
    for i, method in enumerate(m for m in IG_METHODS if m in scores.gap):
        gap, mu = np.nanmean(scores.gap_fraction(method)), np.nanmean(scores.alignment[method])
        star = method == "tangential"
        label = f"{method}: mean gap {gap:.0%}, mean mu {mu:.2f}"
        ax.scatter(gap, mu, marker="*" if star else "s", s=110 if star else 45, zorder=3,
                   color=f"C{i + 1}", label=label)  # fmt: skip
    for colour, method in zip(_PATH_COLOURS, PATH_METHODS, strict=True):
        if method in scores.gap:
            gap = np.nanmean(scores.gap_fraction(method))
            mu = np.nanmean(scores.alignment[method])
            label = f"{method}: mean gap {gap:.0%}, mean mu {mu:.2f}"
            ax.scatter(gap, mu, marker="^", s=70, zorder=4, facecolors="none", edgecolors=colour,
                       linewidths=1.6, label=label)  # fmt: skip
    for i, method in enumerate(m for m in GRADIENT_METHODS if m in scores.alignment):
        mu = np.nanmean(scores.alignment[method])
        ax.axhline(mu, color=f"C{i + 7}", ls="-.", lw=1.2,
                   label=f"{method} (no base-point): {mu:.2f}")  # fmt: skip
    ax.axhline(scores.chance_level, color="black", ls=":", lw=1.2, label="chance sqrt(r/d)")
