"""``docs/results.md``: the reproduction study's page, rendered from measured statistics.

Everything the page says about the paper's claim (met or not, which method comes next, what
the alignment cost in output gap) is worded from the numbers in :class:`StudyReport`, never
written by hand, so rerunning the study rewrites the verdict with the table. The page is
rendered again after every step, so an interrupted run leaves a page of what it finished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tig_batch.backends import BackendName
from tig_batch.engine import BaselineSearch
from tig_batch.pipeline import METHODS
from tig_batch.report import format_value, markdown_rows
from tig_batch.study._ablations import Ablation, VariantResult
from tig_batch.study._comparison import PAPER_MODE, Comparison, Row
from tig_batch.study._page_faithfulness import faithfulness_section
from tig_batch.study._settings import Models, Settings, Splits

PAPER_MU = 0.91  # the paper's headline: tangentially aligned IG with mean mu > 0.91
MAIN_HEADER = ("method", "n", "mean mu", "q25", "median", "q75", "above chance", "mean gap",
               "gap / zero's", "flagged")  # fmt: skip
ABLATION_HEADER = ("variant", "n", "chance", "mean mu", "median", "above chance", "mean gap",
                   "mean iterations", "grad evals / image", "degenerate", "seconds")  # fmt: skip


@dataclass
class StudyReport:
    """Everything the page shows; filled in as the study's steps finish."""

    command: str  # the command line that gives this run, shown on the page
    splits: Splits
    settings: Settings
    backend: BackendName
    threads: int | None
    models: Models | None = None
    comparison: Comparison | None = None  # None: the main comparison was left out
    figures: dict[str, Path] = field(default_factory=dict)  # beyond the comparison's
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step
    ablations: list[tuple[Ablation, dict[str, VariantResult]]] = field(default_factory=list)
    ablation_images: int = 0
    notes: list[str] = field(default_factory=list)
    cached_only: bool = False

    def add_comparison(self, comparison: Comparison) -> None:
        """Show ``comparison``, keeping the notes of earlier ones (they stay true)."""
        self.comparison = comparison
        self.notes = sorted(set(self.notes) | set(comparison.notes))


def shown(path: Path) -> str:
    """``path`` as the page shows it: under the home directory as ``~/...``, so the page names
    the same place on every machine that ran the command."""
    try:
        return str(Path("~") / Path(path).resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


def main_table(rows: Sequence[Row]) -> str:
    f = format_value
    cells = [
        [r.method, str(r.count), f(r.mean), f(r.q25), f(r.median), f(r.q75),
         f(r.above_chance, percent=True), f(r.mean_gap), f(r.gap_fraction, percent=True),
         str(r.flagged)]
        for r in rows
    ]  # fmt: skip
    return "\n".join(markdown_rows(MAIN_HEADER, cells))


def partial_note(comparison: Comparison, shard_size: int) -> list[str]:
    """A warning when the main comparison covers only the shards finished so far."""
    if comparison.n_images >= comparison.n_total:
        return []
    return [
        f"**Partial: {comparison.n_images} of the {comparison.n_total} test images** (the "
        f"shards of {shard_size} images finished before the run was stopped; the first "
        "images of the test split). Rerun the same command to complete the rest.",
        "",
    ]


def headline(rows: Sequence[Row], paper_mode: Row | None = None) -> str:
    """How the tangential rows compare with the paper's claim, in words, from the numbers."""
    by = {r.method: r for r in rows}
    if "tangential" not in by:
        return "The tangential method did not run, so the headline cannot be checked."
    t = by["tangential"]
    others = [r for r in rows if r.method != "tangential" and np.isfinite(r.mean)]
    best = max(others, key=lambda r: r.mean)
    beaten = [r.method for r in others if r.mean >= t.mean]
    parts = [
        f"- Paper: tangentially aligned IG reaches mean `mu > {PAPER_MU}`. Here, keeping "
        f"{_share(t)} of the zero base-point's output gap (the default): mean `mu = "
        f"{t.mean:.3f}` (median {t.median:.3f}, quartiles {t.q25:.3f} to {t.q75:.3f}), "
        + ("**meeting** it." if t.mean > PAPER_MU else "**short of** it."),
    ]
    if paper_mode is not None:
        parts.append(
            f"- In paper mode (no gap constraint, {paper_mode.count} images): mean `mu = "
            f"{paper_mode.mean:.3f}`, "
            + ("**meeting** it" if paper_mode.mean > PAPER_MU else "**short of** it")
            + f", at {_share(paper_mode)} of the zero base-point's gap; {paper_mode.flagged} "
            f"of {paper_mode.count} results flagged (gap below 10% of the zero base-point's)."
        )
    parts.append(
        "- Paper: above every common base-point and every gradient explainer. Here: "
        + (f"**yes**; the next best is {best.method} at {best.mean:.3f}."
           if not beaten else f"**no**; {', '.join(beaten)} score(s) as high or higher.")
    )  # fmt: skip
    if t.flagged:
        parts.append(
            f"- {t.flagged} of {t.count} tangential results are flagged (their kept gap fell "
            "below 10% of the zero base-point's, or no step met min_gap)."
        )
    return "\n".join(parts)


def _share(row: Row) -> str:
    return "n/a" if row.gap_fraction is None else f"{row.gap_fraction:.0%}"


def _variant_cells(variant_method: str, label: str, r: VariantResult) -> list[str]:
    """One ablation row: statistics of ``mu`` over its finite values; search columns only for
    the tangential method."""
    f = format_value
    finite = np.isfinite(r.mu)
    mu, searched = r.mu[finite], variant_method == "tangential"
    gap = r.gap[np.isfinite(r.gap)]
    return [
        label, str(int(finite.sum())), f(float(np.mean(r.chance))),
        f(float(mu.mean()) if mu.size else np.nan),
        f(float(np.median(mu)) if mu.size else np.nan),
        f(float((mu > r.chance[finite]).mean()) if mu.size else np.nan, percent=True),
        f(float(gap.mean())) if gap.size else "",
        f(float(r.iterations.mean()), 1) if searched else "",
        f(float(r.evaluations.mean()), 0) if searched else "",
        str(int(r.degenerate.sum())) if searched else "",
        f(r.seconds, 0),
    ]  # fmt: skip


def ablation_table(ablation: Ablation, results: dict[str, VariantResult]) -> str:
    cells = [
        _variant_cells(v.method, v.label, results[v.label])
        for v in ablation.variants
        if v.label in results
    ]
    lines = markdown_rows(ABLATION_HEADER, cells)
    missing = [v.label for v in ablation.variants if v.label not in results]
    if missing:
        lines += ["", f"Not computed in the time the run had: {', '.join(missing)}."]
    return "\n".join(lines)


def model_lines(report: StudyReport) -> list[str]:
    """Each model's test quality and training time (from its checkpoint's metrics)."""
    if report.models is None:
        return []
    s, lines = report.settings.training, []
    for name, metrics in report.models.metrics.items():
        took = f"trained in {metrics.get('train_seconds', float('nan')):.0f} s"
        if name == "classifier":
            accuracy = metrics.get("test_accuracy", float("nan"))
            lines.append(
                f"- classifier (SmallCNN, {s.classifier_epochs} epoch(s)): test accuracy "
                f"{accuracy:.4f} ({took})"
            )
        else:
            mse = metrics.get("test_mse", float("nan"))
            lines.append(
                f"- autoencoder, latent n = {name.removeprefix('ae-n')} ({s.autoencoder_epochs} "
                f"epoch(s)): test MSE {mse:.4f} per pixel ({took})"
            )
    lines.append(f"- models and bundles: `{shown(report.models.directory)}`")
    return lines


def describe_search(search: BaselineSearch) -> str:
    """A base-point search's settings in words, as the page states them."""
    if search.optimizer == "surrogate":
        step = (
            f"surrogate steps (damping {search.damping:g}, {search.inner_iterations} inner "
            f"iterations, the aimed-for gap annealed over {search.anneal:.0%} of the steps)"
        )
    elif search.optimizer == "projection":
        step = f"projection steps (damping {search.damping:g})"
    else:
        step = f"{search.gradient} ascent (normalised step lr {search.lr:g})"
    if not search.min_gap:
        kept = "no gap constraint"
    elif search.gap_relative:
        kept = f"keeping {search.min_gap:g} of the zero base-point's output gap"
    else:
        kept = f"keeping an output gap of {search.min_gap:g}"
    return (
        f"{step} from the {search.init} base-point, {search.n_iterations} iterations, "
        f"{search.n_steps} nodes inside the loop, {kept}, best iterate kept"
    )


def _intro(report: StudyReport) -> list[str]:
    """The title, the command, the dataset and the settings the numbers depend on."""
    e, c = report.settings.explain, report.comparison
    search = e.search
    cached = [
        "This page was assembled with `--cached-only` from what invocations of that command "
        "had finished; nothing was computed for it.",
        "",
    ]
    return [
        "# Reproducing the paper: tangential alignment of explanations",
        "",
        "Generated by `scripts/reproduce_paper.py` with the command below. Steps an earlier "
        "invocation finished (trained models, bundles, explanations, ablation variants) are "
        "reused from its work directory, with the times measured when they were computed.",
        "",
        "```bash",
        report.command,
        "```",
        "",
        *(cached if report.cached_only else []),
        f"Dataset `{report.splits.name}`: train `{shown(report.splits.train)}`, test "
        f"`{shown(report.splits.test)}`; "
        + (
            f"{c.n_images} test images explained with every method, shard by shard, "
            "through `tig_batch.run` on a `Job` (what `tig-batch explain` runs)"
            if c
            else "the main comparison was left out of this run (`--skip-main`)"
        )
        + f"; {report.backend} backend, {report.threads or 'default'} thread(s).",
        "",
        f"Settings: IG rule {e.method}, n_steps {e.n_steps}; tangential base-point: "
        f"{describe_search(search)}; Gaussian sigma {e.gaussian_sigma:g}; blur sigma "
        f"{e.blur_sigma:g}; SmoothGrad sigma {e.smoothgrad_sigma:g} with "
        f"{e.smoothgrad_samples} samples; Guided IG {e.guidedig_n_steps} steps (fraction "
        f"{e.guidedig_fraction:g}, max distance {e.guidedig_max_dist:g}) from the zero "
        f"base-point; Blur IG {e.blurig_n_steps} steps up to sigma {e.blurig_max_sigma:g}; "
        f"Expected Gradients {e.expectedgrad_samples} base-points drawn per image from the "
        "train split; target: the predicted class's logit. The ablations "
        f"search by {describe_search(report.settings.ablation_search)}, and vary that.",
        "",
        "## Models",
        "",
        *model_lines(report),
        "",
    ]


def _comparison_section(report: StudyReport, rel: dict[str, str]) -> list[str]:
    """The main table with its reading, the verdict on the paper's headline, the figures."""
    c, lines = report.comparison, []
    if c:
        lines += [
            "## Alignment per method",
            "",
            "`mu = ||U^T v|| / ||v||` is the share of an explanation `v` in the tangent space of "
            "the data manifold; q25/q75 are its quartiles; *above chance* is the share of images "
            "whose `mu` exceeds their own chance level `sqrt(r/d)`. Read `mu` with the mean "
            "output gap `f_c(x) - f_c(a)` (IG methods; *gap / zero's*: as a share of the zero "
            "base-point's gap): an explanation of almost no change in the output explains "
            "nothing, however well aligned. *flagged*: images with a flag (a tangential "
            "base-point whose gap fell below 10% of the zero base-point's, or a zero "
            f"explanation). *{PAPER_MODE}*: the tangential method with no gap constraint "
            "(`--min-gap 0`), the paper's problem.",
            "",
            main_table([*c.rows, *([c.paper_mode] if c.paper_mode else [])]),
            "",
            *partial_note(c, report.settings.shard_size),
            f"Chance level `sqrt(r/d)`: {c.chance:.3f} (mean over images).",
            "",
            "### Against the paper's headline",
            "",
            headline(c.rows, c.paper_mode),
            "",
        ]
    if "density" in rel:
        lines += [f"![Density of mu per method]({rel['density']})", ""]
    if "frontier" in rel:
        lines += [
            "What alignment costs: each image's best `mu` among the search's iterates that "
            "kept each share of the zero base-point's output gap, averaged (measured with the "
            "search's 2-node quadrature; the constrained search did not go to gaps below "
            "`min_gap`, shaded), the same for the paper-mode search (dashed), and every other "
            "method at its own mean gap. The `min_gap` ablation below measures the frontier "
            "with one constrained search per point.",
            "",
            f"![The alignment-gap frontier]({rel['frontier']})",
            "",
        ]
    if c:
        lines += faithfulness_section(c, report.settings.explain.metrics, rel)
    if "examples" in rel:
        lines += [f"![Example explanations]({rel['examples']})", ""]
    return lines


def _ablation_section(report: StudyReport, rel: dict[str, str]) -> list[str]:
    """One table per ablation, then the cost figure of every tangential variant."""
    if not report.ablations:
        return []
    lines = [
        "## Ablations: the paper's open questions",
        "",
        f"Each on the first {report.ablation_images} test images, with the engine calls "
        "the pipeline makes (`optimal_baselines`, `integrated_gradients`, `alignment`) and "
        "the main run's settings, but the ablations' search (above), except the one varied. "
        "*grad evals / image*: model "
        "gradient evaluations of the base-point search (the final IG adds n_steps). "
        "*seconds*: wall time of the variant on the loaded machine (noise: compare "
        "within one table only).",
        "",
    ]
    for ablation, results in report.ablations:
        lines += [f"### {ablation.title}", "", ablation.question, "",
                  ablation_table(ablation, results), ""]  # fmt: skip
    if "ablations" in rel:
        lines += [
            "Every tangential variant above: mean `mu` and mean output gap against the "
            "search's gradient evaluations per image.",
            "",
            f"![Tangential variants: mu and gap against cost]({rel['ablations']})",
            "",
        ]
    return lines


def _timing_section(report: StudyReport) -> list[str]:
    """This invocation's wall time per step, the machine's load, the explain throughput."""
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        "## Wall time",
        "",
        f"This invocation: {timing}. Machine: {os.cpu_count()} CPU cores, load average "
        f"{load} (1, 5, 15 min) as this page was written; other jobs may share the cores, so "
        "times are only comparable within one table.",
    ]
    if c := report.comparison:
        rate = c.n_images / c.explain_seconds if c.explain_seconds else np.nan
        lines += [
            "",
            f"Explaining the {c.n_images} test images with all {len(METHODS)} methods "
            f"took {c.explain_seconds:.0f} s of compute ({rate:.2f} images/s), summed "
            "over the shards, each timed by the invocation that explained it.",
        ]
    return lines


def render(report: StudyReport, out: Path) -> str:
    """The page's Markdown; figures are linked relative to ``out``, where it will be written."""
    figures = {**(report.comparison.figures if report.comparison else {}), **report.figures}
    rel = {k: os.path.relpath(v, out.parent) for k, v in figures.items()}
    lines = [
        *_intro(report),
        *_comparison_section(report, rel),
        *_ablation_section(report, rel),
        *_timing_section(report),
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(lines)
