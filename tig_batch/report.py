"""Tables and figures from explain outputs: what a person looks at.

Reads the HDF5 files ``tig-batch explain`` writes (a file, or a directory of them), and writes
a summary table (Markdown and JSON), the density of the alignment ``mu`` per method against the
chance level, example heat maps, and one self-contained HTML page holding all of them.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from tig_batch.errors import DataError
from tig_batch.pipeline import GRADIENT_METHODS, IG_METHODS, METHODS


@dataclass(frozen=True)
class MethodSummary:
    """How one method's explanations align with the tangent space, over all images read."""

    method: str
    count: int
    mean: float
    median: float
    p10: float
    p90: float
    above_chance: float  # share of images whose mu exceeds their chance level sqrt(r/d)
    mean_abs_delta: float | None  # IG methods: mean |convergence delta|
    mean_output_gap: float | None  # IG methods: mean f_c(x) - f_c(a)
    flagged: int  # images with any flag set


def result_files(paths: Sequence[Path | str]) -> list[Path]:
    """The explain outputs among ``paths``: files as given, directories' ``*.h5`` sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.h5") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or directory")
    if not files:
        raise DataError(f"no explain outputs (*.h5) in {', '.join(map(str, paths))}")
    return files


@dataclass(frozen=True)
class _Columns:
    """The per-image scores of every file, concatenated."""

    chance: np.ndarray
    alignment: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]
    gap: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]


def _read_columns(files: Sequence[Path]) -> _Columns:
    chance, alignment, delta, gap, flags = [], {}, {}, {}, {}
    for path in files:
        try:
            with h5py.File(path, "r") as file:
                if file.attrs.get("format") != "tig-batch-explanations":
                    raise DataError(f"{path}: not a tig-batch explain output")
                chance.append(file["chance_level"][:])
                for method in [m for m in METHODS if f"alignment/{m}" in file]:
                    alignment.setdefault(method, []).append(file[f"alignment/{method}"][:])
                    flags.setdefault(method, []).append(file[f"flags/{method}"][:])
                    if method in IG_METHODS:
                        delta.setdefault(method, []).append(file[f"delta/{method}"][:])
                        gap.setdefault(method, []).append(file[f"output_gap/{method}"][:])
        except OSError as error:
            raise DataError(f"{path}: cannot read ({error})") from None

    def join(columns: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {method: np.concatenate(parts) for method, parts in columns.items()}

    return _Columns(np.concatenate(chance), join(alignment), join(delta), join(gap), join(flags))


def summarize(paths: Sequence[Path | str]) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method present, in the canonical method order."""
    columns = _read_columns(result_files(paths))
    summaries = []
    for method, mu in columns.alignment.items():
        valid = np.isfinite(mu)
        values = mu[valid]
        q = np.percentile(values, [10, 50, 90]) if values.size else [np.nan] * 3
        summaries.append(
            MethodSummary(
                method=method,
                count=int(valid.sum()),
                mean=float(values.mean()) if values.size else float("nan"),
                median=float(q[1]),
                p10=float(q[0]),
                p90=float(q[2]),
                above_chance=float((values > columns.chance[valid]).mean()) if values.size else 0.0,
                mean_abs_delta=_finite_mean(np.abs(columns.delta[method]))
                if method in columns.delta
                else None,
                mean_output_gap=_finite_mean(columns.gap[method])
                if method in columns.gap
                else None,
                flagged=int((columns.flags[method] != 0).sum()),
            )
        )
    return summaries


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def markdown_table(summaries: Sequence[MethodSummary], chance: float | None = None) -> str:
    """The summary as a Markdown table (mu together with the output gap, as it must be read)."""
    header = (
        "| method | n | mean mu | median | p10 | p90 | above chance | mean gap "
        "| mean abs delta | flagged |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    rows = "".join(
        f"| {s.method} | {s.count} | {s.mean:.3f} | {s.median:.3f} | {s.p10:.3f} | {s.p90:.3f} | "
        f"{100 * s.above_chance:.0f}% | {fmt(s.mean_output_gap)} | {fmt(s.mean_abs_delta)} | "
        f"{s.flagged} |\n"
        for s in summaries
    )
    note = "" if chance is None else f"\nChance level sqrt(r/d): {chance:.3f} (mean over images).\n"
    return header + rows + note


def _density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Scott's bandwidth) of ``values`` on ``grid``."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.zeros_like(grid)
    bandwidth = max(values.std(ddof=1) * values.size ** (-1 / 5), 1e-3)
    z = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).sum(1) / (values.size * bandwidth * np.sqrt(2 * np.pi))


def density_figure(paths: Sequence[Path | str], out: Path) -> Path:
    """``alignment_density.png``: density of mu per method, chance level as a dashed line.

    Base-points (IG) on the left, gradient explainers on the right, as in the paper's Figure 1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _read_columns(result_files(paths))
    chance = float(np.nanmean(columns.chance))
    grid = np.linspace(0, 1, 401)
    panels = [("IG base-points", IG_METHODS), ("Gradient explainers", GRADIENT_METHODS)]
    panels = [(title, [m for m in group if m in columns.alignment]) for title, group in panels]
    panels = [(title, group) for title, group in panels if group]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, group) in zip(axes[0], panels, strict=True):
        for method in group:
            mu = columns.alignment[method]
            ax.plot(grid, _density(mu, grid), lw=2, label=f"{method} (mean {np.nanmean(mu):.2f})")
        ax.axvline(chance, color="black", ls="--", lw=1.2, label=f"chance sqrt(r/d) = {chance:.2f}")
        ax.set(title=title, xlabel="tangential alignment mu", ylabel="density", xlim=(0, 1))
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "alignment_density.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Example:
    """One image to show: the image (C, H, W) and each method's attribution and mu."""

    label: str
    image: np.ndarray | None
    attributions: dict[str, np.ndarray]
    alignment: dict[str, float]


def examples_figure(
    examples: Sequence[Example], out: Path, value_range: tuple[float, float]
) -> Path:
    """``examples.png``: each image beside every method's attribution as a signed heat map.

    Channels are summed; the colour scale is symmetric and shared by all methods of one image,
    so their magnitudes compare at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(examples[0].attributions)
    n_cols = len(methods) + 1
    fig, axes = plt.subplots(
        len(examples), n_cols, figsize=(1.9 * n_cols, 2.0 * len(examples)), squeeze=False
    )
    for row, example in zip(axes, examples, strict=True):
        maps = {m: example.attributions[m].sum(0) for m in methods}
        scale = max(
            float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 0.0 for v in maps.values()
        )
        scale = scale or 1.0
        if example.image is not None:
            image = np.transpose(example.image, (1, 2, 0))
            image = (image - value_range[0]) / (value_range[1] - value_range[0])
            row[0].imshow(
                image.squeeze(), cmap="gray" if image.shape[2] == 1 else None, vmin=0, vmax=1
            )
        row[0].set_title(example.label, fontsize=8)
        for ax, method in zip(row[1:], methods, strict=True):
            ax.imshow(maps[method], cmap="RdBu_r", vmin=-scale, vmax=scale)
            ax.set_title(f"{method}\nmu {example.alignment[method]:.2f}", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path = out / "examples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def html_page(
    summaries: Sequence[MethodSummary], figures: Sequence[Path], out: Path, chance: float
) -> Path:
    """``report.html``: the table and the figures in one file (images inlined)."""
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(value)}</td>"
            for value in [
                s.method, str(s.count), f"{s.mean:.3f}", f"{s.median:.3f}", f"{s.p10:.3f}",
                f"{s.p90:.3f}", f"{100 * s.above_chance:.0f}%",
                "" if s.mean_output_gap is None else f"{s.mean_output_gap:.3f}",
                "" if s.mean_abs_delta is None else f"{s.mean_abs_delta:.3f}", str(s.flagged),
            ]
        )
        + "</tr>"
        for s in summaries
    )  # fmt: skip
    images = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img alt="{html.escape(p.name)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in figures
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ["method", "n", "mean mu", "median", "p10", "p90", "above chance", "mean gap",
                  "mean |delta|", "flagged"]
    )  # fmt: skip
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tig-batch report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body><h1>Tangential alignment of explanations</h1>
<p>mu = ||U<sup>T</sup>v|| / ||v||: the share of an explanation in the data manifold's tangent
space. Chance level sqrt(r/d) = {chance:.3f}. Read mu together with the output gap
f<sub>c</sub>(x) - f<sub>c</sub>(a): alignment bought by collapsing the gap explains nothing.</p>
<table><tr>{head}</tr>{cells}</table>{images}</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def write_summary(
    summaries: Sequence[MethodSummary], out: Path, chance: float
) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.json``."""
    markdown = out / "summary.md"
    markdown.write_text(markdown_table(summaries, chance))
    data = {"chance_level": chance, "methods": [asdict(s) for s in summaries]}
    js = out / "summary.json"
    js.write_text(json.dumps(data, indent=2) + "\n")
    return markdown, js
