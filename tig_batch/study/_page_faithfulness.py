"""The paper study page's faithfulness section: the metrics' table, how to read it (worded
from its numbers) and the alignment-deletion figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tig_batch._faithfulness import BETTER, METRICS, MetricsConfig
from tig_batch.report import COLUMN_NOTES, METRIC_COLUMNS, format_value, markdown_rows
from tig_batch.study._comparison import Comparison, Row
from tig_batch.study._rescore import BLUR_METRICS


def faithfulness_table(rows: Sequence[Row]) -> str | None:
    """Per method: the mean of each faithfulness metric the outputs hold, and completeness;
    None when they hold no metrics (explained before format 3)."""
    present = [m for m in METRICS if any(m in r.metrics for r in rows)]
    if not present:
        return None
    rescored = [m for m in BLUR_METRICS if any(m in r.metrics for r in rows)]
    header = ["method", *(f"{METRIC_COLUMNS[m]} ({BETTER[m]} is better)" for m in present),
              *(f"{m} AUC" for m in rescored), "mean abs delta"]  # fmt: skip
    cells = [
        [r.method, *(format_value(r.metrics.get(m)) for m in [*present, *rescored]),
         format_value(r.mean_abs_delta)]
        for r in rows
    ]  # fmt: skip
    notes = [f"*{METRIC_COLUMNS[m]}*: {COLUMN_NOTES[METRIC_COLUMNS[m]]}" for m in present]
    if rescored:
        notes.append(
            "*deletion, blur AUC* and *insertion, blur AUC*: the same explanations rescored "
            "with the blurred image (the blur base-point) as the replacement value, as "
            "`--deletion-replacement blur` would score them."
        )
    notes.append(f"*mean abs delta*: {COLUMN_NOTES['mean abs delta']}")
    return "\n".join([*markdown_rows(header, cells), "", *(f"- {n}" for n in notes)])


def _faithfulness_reading(rows: Sequence[Row], replacement: str) -> list[str]:
    """What to keep in mind reading the faithfulness table, worded from its numbers."""
    lines = []
    if replacement == "zero":
        lines.append(
            "Each replacement value favours, by construction, the methods whose base-point it "
            "is: removing a pixel where the image already equals the replacement changes "
            "nothing, and those methods give such pixels no attribution. Zero replacement "
            "favours IG from the zero base-point, inputxgrad and guidedig; blurred "
            "replacement (`--deletion-replacement blur`) favours the blur base-point and "
            "blurig. Read both columns."
        )
    by = {r.method: r.metrics for r in rows}
    blurred = BLUR_METRICS[0]
    if np.isfinite(by.get("tangential", {}).get(blurred, np.nan)):
        finite = [m for m in by if np.isfinite(by[m].get(blurred, np.nan))]
        ranked = sorted(finite, key=lambda m: by[m][blurred])
        others = ", ".join(f"{m} {by[m][blurred]:.3f}" for m in ranked if m != "tangential")
        lines.append(
            f"With the blurred image as the replacement, tangential's deletion AUC is "
            f"{by['tangential'][blurred]:.3f}, rank {ranked.index('tangential') + 1} of "
            f"{len(ranked)} ({others})."
        )
    values = [
        r.metrics["infidelity"] for r in rows if np.isfinite(r.metrics.get("infidelity", np.nan))
    ]
    if len(values) > 1 and max(values) - min(values) < 0.2 * max(values):
        lines.append(
            f"Infidelity spans only {min(values):.3f} to {max(values):.3f} across the methods: "
            "it separates them little on these models and settings."
        )
    return [*(f"{line}\n" for line in lines)]


def faithfulness_section(c: Comparison, m: MetricsConfig, rel: dict[str, str]) -> list[str]:
    """Whether the explanations say what the model does: the metrics' table and the scatter
    of alignment against deletion AUC (``m``: the metrics' settings; ``rel``: the figures'
    paths relative to the page). Empty when the outputs hold no metrics."""
    table = faithfulness_table([*c.rows, *([c.paper_mode] if c.paper_mode else [])])
    if table is None:
        return []
    lines = [
        "## Faithfulness per method",
        "",
        "Alignment says whether an explanation lies on the data manifold, not whether it "
        "says what the model does. The same explanations, scored per image and averaged "
        f"(deletion and insertion over {m.deletion_steps} steps, removed pixels replaced by "
        f"the {m.deletion_replacement} base-point's values, the curve of `f_c` normalised by "
        f"`f_c(x)`; infidelity with {m.infidelity_samples} Gaussian perturbations of sigma "
        f"{m.infidelity_sigma:g}, seeded per image):",
        "",
        table,
        "",
        *_faithfulness_reading(c.rows, m.deletion_replacement),
    ]
    if "faithfulness" in rel:
        lines += [
            "Alignment against deletion AUC, one point per method at the medians, the bars "
            "spanning the quartiles over images: up and to the left is aligned and faithful.",
            "",
            f"![Alignment against deletion AUC]({rel['faithfulness']})",
            "",
        ]
    return lines
