"""The sanity check's table, record and figure: how far each method's explanations move as
the classifier's layers are randomised from the top.

A cell is the rank correlation of ``|attributions|`` with the original explanation, mean and
standard deviation over the images, after the layers up to its column are re-drawn; a method
that stays near 1 explains something other than what the classifier learned.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from tig_batch._sanity_check import SanityCheck
from tig_batch.pipeline import GRADIENT_METHODS
from tig_batch.report._faithfulness import _COLOURS, _MARKERS
from tig_batch.report._table import _json_safe, format_value, markdown_rows


def _stats(values: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, standard deviation, 25th and 75th percentile of the finite values (NaN if none)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (float("nan"),) * 4
    q25, q75 = np.percentile(finite, [25, 75])
    return float(finite.mean()), float(finite.std()), float(q25), float(q75)


def step_labels(layers: tuple[str, ...]) -> list[str]:
    """Column and tick names: the top layer, then ``+ name`` for each layer added."""
    return [layers[0], *(f"+ {name}" for name in layers[1:])]


def sanity_table(check: SanityCheck, threshold: float) -> str:
    """The Markdown table, what its cells mean, and which methods pass."""
    header = ["method", *step_labels(check.layers), f"passed (< {threshold:g})"]
    rows = []
    for method, values in check.spearman_abs.items():
        cells = []
        for step in values:
            mean, std, _, _ = _stats(step)
            cells.append(f"{format_value(mean, 2)} ± {format_value(std, 2)}")
        n_passed = int(check.passed(method, threshold).sum())
        rows.append([method, *cells, f"{n_passed}/{len(check.ids)}"])
    table = "".join(f"{line}\n" for line in markdown_rows(header, rows))
    notes = (textwrap.fill(note, width=100) for note in _notes(check, threshold))
    return table + "".join(f"\n{note}\n" for note in notes)


def _notes(check: SanityCheck, threshold: float) -> list[str]:
    passing = [m for m in check.methods if check.method_passes(m, threshold)]
    failing = [m for m in check.methods if m not in passing]
    return [
        f"Spearman rank correlation of |attributions| with the original explanation, mean ± "
        f"sd over {len(check.ids)} images, after re-drawing the classifier's layers from the "
        "top down to each column's; an image passes when it has fallen below "
        f"{threshold:g} with every layer re-drawn.",
        f"Pass (more than half of the images): {', '.join(passing) or 'none'}. "
        f"Fail: {', '.join(failing) or 'none'}.",
    ]


def sanity_record(check: SanityCheck, threshold: float) -> dict[str, Any]:
    """Everything the check found, per image, for ``--json`` (NaN as null)."""
    methods = {}
    for method in check.methods:
        steps = [_stats(step) for step in check.spearman_abs[method]]
        passed = check.passed(method, threshold)
        methods[method] = {
            "passes": check.method_passes(method, threshold),
            "n_passed": int(passed.sum()),
            "passed": passed.tolist(),
            "mean_spearman_abs": [s[0] for s in steps],
            "std_spearman_abs": [s[1] for s in steps],
            "spearman_abs": check.spearman_abs[method].tolist(),
            "spearman": check.spearman[method].tolist(),
        }
    return _json_safe(
        {
            "bundle": str(check.bundle),
            "threshold": threshold,
            "layers": list(check.layers),
            "ids": list(check.ids),
            "target": check.target.tolist(),
            "config": json.loads(json.dumps(dataclasses.asdict(check.config))),
            "methods": methods,
        }
    )  # type: ignore[return-value]


def sanity_figure(check: SanityCheck, path: Path, threshold: float) -> Path:
    """Mean rank correlation of ``|attributions|`` against the layers re-drawn, one line per
    method with its images' middle half shaded, and the threshold dashed."""
    from tig_batch.report._figures import pyplot, save_figure

    labels = step_labels(check.layers)
    fig, ax = pyplot().subplots(
        figsize=(max(6.5, 3.2 + 0.9 * len(labels)), 5.0), layout="constrained"
    )
    x, lowest = np.arange(len(labels)), -0.2
    for method, values in check.spearman_abs.items():
        stats = np.array([_stats(step) for step in values])
        colour = _COLOURS.get(method, "grey")
        verdict = "pass" if check.method_passes(method, threshold) else "fail"
        hollow = method in GRADIENT_METHODS  # a line on top of another still shows both
        ax.plot(x, stats[:, 0], marker=_MARKERS.get(method, "o"), color=colour, lw=1.6,
                ms=8 if hollow else 6, mfc="none" if hollow else colour,
                label=f"{method}: {format_value(stats[-1, 0], 2)} ({verdict})")  # fmt: skip
        ax.fill_between(x, stats[:, 2], stats[:, 3], color=colour, alpha=0.12, lw=0)
        if np.isfinite(stats).any():
            lowest = min(lowest, float(np.nanmin(stats[:, [0, 2]])))
    ax.axhline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    ax.axhline(0, color="grey", lw=0.6)
    tilted = len(labels) > 4
    ax.set_xticks(x, labels, rotation=30 if tilted else 0, ha="right" if tilted else "center")
    ax.set(
        xlabel="layers re-drawn (cumulative, from the top)", ylim=(lowest - 0.05, 1.05),
        ylabel="rank correlation of |attributions|\nwith the original (mean)",
    )  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        f"Model randomisation ({len(check.ids)} images): explanations should move away\n"
        "from the original as layers are re-drawn; shading spans the middle half of the images",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=110)
