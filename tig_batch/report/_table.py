"""The summary as tables: the cells, the Markdown table with its notes, summary.md and .json.

One set of cells serves the printed table, ``summary.md`` and the HTML page, with one sentence
per column (:data:`COLUMN_NOTES`) saying what it measures and which direction is better.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tig_batch._faithfulness import BETTER, METRICS
from tig_batch.report._summary import FLAGS_EXPLAINED, MethodSummary


def format_value(value: float | None, digits: int = 3, percent: bool = False) -> str:
    """A table cell: blank for a statistic that does not apply (None), ``n/a`` for one with no
    finite value, else ``digits`` decimals (or a whole percentage)."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.0f}%" if percent else f"{value:.{digits}f}"


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: the header, then ``rows``; numbers right-aligned after the
    first column. One helper, so every table in the reports is drawn alike."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


TABLE_HEADER = (
    "method", "n", "mean mu", "median", "p10", "p90", "above chance", "mean gap",
    "gap / zero's", "mean abs delta", "flagged",
)  # fmt: skip
#: The table's column of each metric (means over images).
METRIC_COLUMNS = {
    "deletion": "deletion AUC",
    "insertion": "insertion AUC",
    "infidelity": "infidelity",
    "sensitivity": "max-sensitivity",
    "sparseness": "sparseness",
}
#: One sentence per column: what it measures and, where it applies, which direction is better.
COLUMN_NOTES = {
    "method": "The explanation: IG from a base-point (tangential, zero, uniform, gaussian, "
    "maxdist, blur), a gradient explainer (gradient, smoothgrad, inputxgrad) or a path method "
    "beyond the paper (guidedig, blurig, expectedgrad).",
    "n": "Images whose mu is defined (a zero explanation or a skipped image has none).",
    "mean mu": "Alignment mu = ||U^T v|| / ||v||, the share of the explanation v in the tangent "
    "space of the data manifold, averaged over images; higher is more on the manifold (a "
    "random direction scores the chance level sqrt(r/d)).",
    "median": "The median of mu over images.",
    "p10": "The 10th percentile of mu: how the least aligned tenth of the images fares.",
    "p90": "The 90th percentile of mu.",
    "above chance": "The share of images whose mu exceeds their own chance level sqrt(r/d).",
    "mean gap": "The output gap f_c(x) - f_c(a) between the image and the base-point (methods "
    "with one): how much of the output the explanation accounts for; alignment bought by "
    "shrinking it explains nothing.",
    "gap / zero's": "The output gap as a share of the zero base-point's gap f_c(x) - f_c(0), "
    "averaged over images (100% for the zero base-point itself).",
    "mean abs delta": "Completeness: |sum of the attributions - output gap|, the error of the "
    "path integral (Monte Carlo error for expectedgrad); lower is better.",
    "flagged": "Images whose result needs care, and why (see below).",
    "deletion AUC": "Area under the explained output, as a share of f_c(x), as the pixels the "
    "explanation ranks most relevant are removed first; lower means the explanation found what "
    "the model relies on (more faithful).",
    "insertion AUC": "The same as those pixels are inserted first into the replacement image; "
    "higher is more faithful.",
    "infidelity": "Mean squared error between the attributions' prediction (noise . "
    "attributions) and the output's real change under Gaussian noise (Yeh et al.); lower is "
    "more faithful, and it depends on the attributions' scale unless normalised.",
    "max-sensitivity": "The largest relative change of the explanation when the image is "
    "perturbed slightly; lower is more robust.",
    "sparseness": "Gini index of |attributions|: 0 when every pixel carries the same weight, "
    "near 1 when a few carry it all; higher is more concise (not by itself more faithful).",
}


def table_header(summaries: Sequence[MethodSummary]) -> list[str]:
    """The table's columns: :data:`TABLE_HEADER`, then each metric any method has."""
    present = [m for m in METRICS if any(m in s.metrics for s in summaries)]
    return [*TABLE_HEADER, *(METRIC_COLUMNS[m] for m in present)]


def table_rows(summaries: Sequence[MethodSummary]) -> list[list[str]]:
    """The table's cells as text, one row per method (shared by Markdown and HTML)."""
    present = [m for m in METRICS if any(m in s.metrics for s in summaries)]
    return [
        [
            s.method, str(s.count), format_value(s.mean), format_value(s.median),
            format_value(s.p10), format_value(s.p90), format_value(s.above_chance, percent=True),
            format_value(s.mean_output_gap), format_value(s.mean_gap_fraction, percent=True),
            format_value(s.mean_abs_delta), flagged_text(s),
            *(format_value(s.metrics.get(m)) for m in present),
        ]
        for s in summaries
    ]  # fmt: skip


def metrics_note(summaries: Sequence[MethodSummary]) -> str | None:
    """Which direction is better for each metric in the table; None without metrics."""
    present = [m for m in METRICS if any(m in s.metrics for s in summaries)]
    if not present:
        return None
    return (
        "Faithfulness (means over images): "
        + ", ".join(f"{METRIC_COLUMNS[m]} {BETTER[m]} is better" for m in present)
        + "; completeness is mean abs delta."
    )


def flagged_text(summary: MethodSummary) -> str:
    """The flagged count, with what the flags were when there are any: ``3 (3 small gap)``."""
    why = ", ".join(f"{n} {name}" for name, n in summary.flag_counts.items() if n)
    return f"{summary.flagged} ({why})" if summary.flagged else "0"


def markdown_table(summaries: Sequence[MethodSummary], chance: float | None = None) -> str:
    """The summary as a Markdown table (mu together with the output gap, as it must be read)."""
    rows = markdown_rows(table_header(summaries), table_rows(summaries))
    table = "".join(f"{line}\n" for line in rows)
    notes = [] if chance is None else [f"Chance level sqrt(r/d): {chance:.3f} (mean over images)."]
    if any(s.mean_gap_fraction is not None for s in summaries):
        notes.append(
            "gap / zero's: the output gap f_c(x) - f_c(a) as a share of the zero base-point's."
        )
    metric_words = metrics_note(summaries)
    if metric_words:
        notes.append(metric_words)
    if any(s.flagged for s in summaries):
        notes.append(FLAGS_EXPLAINED[0].upper() + FLAGS_EXPLAINED[1:])
    return table + "".join(f"\n{note}\n" for note in notes)


def _json_safe(value: object) -> object:
    """NaN becomes null: JSON has no NaN, and strict readers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_summary(
    summaries: Sequence[MethodSummary], out: Path, chance: float, extra: dict | None = None
) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.json`` (``extra``: more top-level JSON fields)."""
    markdown = out / "summary.md"
    markdown.write_text(markdown_table(summaries, chance))
    data = {**(extra or {}), "chance_level": chance, "methods": [asdict(s) for s in summaries]}
    path = out / "summary.json"
    path.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return markdown, path
