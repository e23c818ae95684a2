"""The report's figures: the density of mu per method and example heat maps.

matplotlib runs on its Agg backend (files only, no display); it is imported when a figure is
drawn, so reading and summarising results never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from tig_batch.pipeline import GRADIENT_METHODS, IG_METHODS, PATH_METHODS
from tig_batch.report._summary import Scores

HEATMAP = "RdBu_r"  # diverging: red positive, blue negative, white zero


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG and free it."""
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Scott's bandwidth) of the finite ``values`` on ``grid``.

    Mass that the kernels put below 0 or above 1 is reflected back, since mu lies in [0, 1]:
    without it a method whose mu crowds against 1 would look as if it faded out before 1.
    """
    values = values[np.isfinite(values)]
    if values.size < 2:
        return np.zeros_like(grid)
    bandwidth = max(values.std(ddof=1) * values.size ** (-1 / 5), 1e-3)
    total = np.zeros_like(grid)
    for centres in (values, -values, 2 - values):
        z = (grid[:, None] - centres[None, :]) / bandwidth
        total += np.exp(-0.5 * z**2).sum(1)
    return total / (values.size * bandwidth * np.sqrt(2 * np.pi))


def density_figure(scores: Scores, out: Path) -> Path:
    """``alignment_density.png``: density of mu per method, chance level as a dashed line.

    Base-points (IG) on the left, gradient explainers on the right, as in the paper's Figure 1;
    the path methods beyond the paper, when they ran, in a third panel.
    """
    plt = pyplot()
    chance = scores.chance_level
    grid = np.linspace(0, 1, 401)
    panels = [
        ("IG with each base-point", IG_METHODS), ("Gradient explainers", GRADIENT_METHODS),
        ("Path methods beyond the paper", PATH_METHODS),
    ]  # fmt: skip
    panels = [(title, [m for m in group if m in scores.alignment]) for title, group in panels]
    panels = [(title, group) for title, group in panels if group]
    curves = {m: density(scores.alignment[m], grid) for _, group in panels for m in group}
    top = max((float(c.max()) for c in curves.values()), default=0.0) or 1.0
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(6.4 * len(panels), 5.0),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, (title, group) in zip(axes[0], panels, strict=True):
        for method in group:
            mu = scores.alignment[method]
            mean = np.nanmean(mu) if np.isfinite(mu).any() else float("nan")
            ax.plot(grid, curves[method], lw=2, label=f"{method} (mean {mean:.2f})")
        ax.axvline(chance, color="black", ls="--", lw=1.4, label=f"chance sqrt(r/d) = {chance:.2f}")
        ax.set_title(title, fontsize=12)
        ax.set(xlabel="alignment mu with the tangent space", xlim=(0, 1), ylim=(0, 1.08 * top))
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density over images")
    fig.suptitle(f"Alignment of explanations with the data manifold ({scores.n_images} images)")
    return save_figure(fig, out / "alignment_density.png", dpi=110)


@dataclass(frozen=True)
class Example:
    """One image to show: the image (C, H, W) in ``value_range`` or None when its input shard
    is gone, and each method's attribution (C, H, W), mu and, for IG methods, output gap as a
    share of the zero base-point's."""

    label: str
    image: np.ndarray | None
    value_range: tuple[float, float]
    attributions: dict[str, np.ndarray]
    alignment: dict[str, float]
    gap_fraction: dict[str, float] = field(default_factory=dict)


ColourScale = Literal["row", "method"]
COLOUR_SCALES: tuple[str, ...] = get_args(ColourScale)


def _image_rgb(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    lo, hi = value_range
    scaled = np.clip((np.transpose(image, (1, 2, 0)) - lo) / (hi - lo), 0, 1)
    return scaled[..., 0] if scaled.shape[2] == 1 else scaled[..., :3]


#: Explainers whose maps are sensitivities (output per input unit) rather than attributions
#: in output units: a row's shared colour scale gives them a scale of their own.
SENSITIVITY_METHODS = ("gradient", "smoothgrad")
#: Colour scales end at this percentile of a map's magnitudes, so a few extreme pixels
#: saturate instead of washing out the rest (the usual way saliency maps are drawn).
SCALE_PERCENTILE = 99.0


def _robust_max(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size:
        return 0.0
    return float(np.percentile(finite, SCALE_PERCENTILE)) or float(finite.max())


def _panel_scales(maps: dict[str, np.ndarray], colour_scale: ColourScale) -> dict[str, float]:
    """Each panel's colour limit: its own, or shared within attributions and within
    sensitivities (the two do not share units)."""
    own = {m: _robust_max(v) or 1.0 for m, v in maps.items()}
    if colour_scale == "method":
        return own
    scales: dict[str, float] = {}
    for group in ([m for m in maps if m not in SENSITIVITY_METHODS], SENSITIVITY_METHODS):
        members = [m for m in group if m in maps]
        shared = max((own[m] for m in members), default=1.0)
        scales.update(dict.fromkeys(members, shared))
    return scales


def _panel_title(method: str, example: Example, scale: float | None) -> str:
    mu = example.alignment[method]
    words = [method, f"mu {'n/a' if math.isnan(mu) else f'{mu:.2f}'}"]
    gap = example.gap_fraction.get(method)
    if gap is not None and math.isfinite(gap):
        words[1] += f", gap {gap:.0%}"
    if scale is not None:
        words.append(f"scale \u00b1{scale:.2g}")
    return "\n".join(words)


def _draw_image(ax: Any, example: Example) -> None:
    if example.image is not None:
        picture = _image_rgb(example.image, example.value_range)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    else:
        ax.text(0.5, 0.5, "input shard\nnot found", ha="center", va="center", fontsize=8)
    ax.set_title(example.label, fontsize=8)


def examples_figure(
    examples: Sequence[Example], out: Path, colour_scale: ColourScale = "row"
) -> Path:
    """``examples.png``: each image beside every method's attribution as a signed heat map.

    Channels are summed; colour scales are symmetric about zero and end at the
    ``SCALE_PERCENTILE`` of the magnitudes. ``row`` (the default) shares one scale among an
    image's attributions (IG and input x gradient, the colour bar on the right) so their
    magnitudes compare at a glance, and one among its gradient maps, whose units differ;
    ``method`` gives every panel its own, so a faint explanation's pattern shows too. Titles
    give each method's mu and, for IG, the output gap kept as a share of the zero base-point's.
    """
    if colour_scale not in COLOUR_SCALES:
        raise ValueError(f"colour_scale must be one of {', '.join(COLOUR_SCALES)}")
    if not examples:
        raise ValueError("no examples to draw")
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    methods = list(examples[0].attributions)
    n_cols = len(methods) + 1
    fig, axes = plt.subplots(
        len(examples), n_cols, figsize=(1.65 * n_cols + 0.6, 2.1 * len(examples)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    attribution_methods = [m for m in methods if m not in SENSITIVITY_METHODS]
    for row, example in zip(axes, examples, strict=True):
        _draw_image(row[0], example)
        maps = {m: example.attributions[m].sum(0) for m in methods}
        scales = _panel_scales(maps, colour_scale)
        for ax, method in zip(row[1:], methods, strict=True):
            limit = scales[method]
            ax.imshow(maps[method], cmap=HEATMAP, vmin=-limit, vmax=limit)
            labelled = colour_scale == "method" or method in SENSITIVITY_METHODS
            ax.set_title(_panel_title(method, example, limit if labelled else None), fontsize=8)
        if colour_scale == "row" and attribution_methods:
            limit = scales[attribution_methods[0]]
            legend = ScalarMappable(Normalize(-limit, limit), HEATMAP)
            ticks = [-limit, 0, limit]
            bar = fig.colorbar(legend, ax=row[-1], fraction=0.08, pad=0.03, ticks=ticks)
            bar.ax.set_yticklabels([f"-{limit:.2g}", "0", f"{limit:.2g}"], fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    which = (
        "one colour scale per row shared by its attributions (bar), gradient maps on their own"
        if colour_scale == "row"
        else "each panel on its own colour scale: compare patterns, not magnitudes"
    )
    fig.suptitle(
        f"Attributions (channels summed; red positive, blue negative; {which}; scales end at "
        f"the {SCALE_PERCENTILE:g}th percentile). gap: output gap kept, as a share of the zero "
        "base-point's",
        fontsize=9,
    )
    return save_figure(fig, out / "examples.png")
