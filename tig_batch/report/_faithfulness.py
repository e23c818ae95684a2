"""Alignment against faithfulness: where each method lies between readable and faithful.

One point per method: its median deletion AUC (how fast the explained output falls as the
pixels it ranks first are removed; lower is more faithful) against its median alignment
``mu`` (higher is more on the data manifold), with the interquartile range over images as
error bars. Up and to the left is better on both counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tig_batch.pipeline import GRADIENT_METHODS, IG_METHODS, METHODS, PATH_METHODS
from tig_batch.report._summary import Scores

#: One marker per family of methods (squares: IG base-points; circles: gradient explainers;
#: triangles: path methods) and one colour per method.
_MARKERS = {**dict.fromkeys(IG_METHODS, "s"), **dict.fromkeys(GRADIENT_METHODS, "o"),
            **dict.fromkeys(PATH_METHODS, "^"), "tangential": "*"}  # fmt: skip
_COLOURS = dict(zip(METHODS, [f"C{i}" for i in range(10)] + ["black", "darkgoldenrod"],
                    strict=True))  # fmt: skip
#: A point is named beside it only when no other lies this close (a share of each axis):
#: in a crowd the names would overlap, and the legend names every point.
_CROWDED = 0.06


def _quartiles(values: np.ndarray) -> tuple[float, float, float] | None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    q25, median, q75 = np.percentile(finite, [25, 50, 75])
    return float(q25), float(median), float(q75)


def faithfulness_figure(scores: Scores, out: Path, replacement: str | None = None) -> Path | None:
    """``alignment_deletion.png``; None when the outputs hold no deletion AUCs (before format
    3, or explained with ``--metrics`` without deletion). ``replacement`` (``zero`` or
    ``blur``), when known, is named on the axis: zero replacement favours IG from the zero
    base-point by construction."""
    deletion = scores.metrics.get("deletion", {})
    methods = [m for m in scores.alignment if m in deletion]
    points = {m: (_quartiles(deletion[m]), _quartiles(scores.alignment[m])) for m in methods}
    points = {m: (d, a) for m, (d, a) in points.items() if d is not None and a is not None}
    if not points:
        return None
    from tig_batch.report._figures import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(9.5, 5.6), layout="constrained")
    right = max(1.05 * max(d[2] for d, _ in points.values()), 0.1)
    for method, (d, a) in points.items():
        star = method == "tangential"
        ax.errorbar(
            d[1], a[1], xerr=[[d[1] - d[0]], [d[2] - d[1]]], yerr=[[a[1] - a[0]], [a[2] - a[1]]],
            fmt=_MARKERS.get(method, "o"), ms=14 if star else 7, color=_COLOURS[method],
            elinewidth=1, capsize=3, alpha=0.9,
            label=f"{method}: deletion {d[1]:.2f}, mu {a[1]:.2f}",
        )  # fmt: skip
        alone = all(
            abs(d[1] - e[1]) / right > _CROWDED or abs(a[1] - b[1]) > _CROWDED
            for other, (e, b) in points.items()
            if other != method
        )
        if alone:
            ax.annotate(method, (d[1], a[1]), xytext=(6, 6), textcoords="offset points",
                        fontsize=8, bbox={"boxstyle": "square,pad=0.1", "fc": "white",
                                          "ec": "none", "alpha": 0.8})  # fmt: skip
    ax.axhline(scores.chance_level, color="black", ls=":", lw=1.2, label="chance sqrt(r/d)")
    replaced = f", pixels replaced by the {replacement} base-point" if replacement else ""
    ax.set(
        xlabel=f"deletion AUC (lower: more faithful{replaced})",
        ylabel="alignment mu (higher: more on the data manifold)", ylim=(0, 1), xlim=(0, right),
    )  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        f"Alignment against faithfulness ({scores.n_images} images): medians, bars span the "
        "middle half of the images\n(better: up and to the left)",
        fontsize=10,
    )
    return save_figure(fig, out / "alignment_deletion.png", dpi=110)
