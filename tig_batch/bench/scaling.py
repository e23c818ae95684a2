"""How the cost per image grows with batch size, ``n_steps``, image size and tangent rank.

Two workloads on the ONNX backend: plain IG (``n_steps`` nodes from the zero base-point) and
the default base-point search cut to one step (two IG evaluations projected onto the tangent
basis, their output gaps, and one surrogate step between them). Speed does not depend on the
weights or on the pixel values, so the other image sizes use the untrained demo models and
every point uses uniform random images and random orthonormal bases of the rank asked for.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, Runtime, load_bundle
from tig_batch.bench._measure import median_seconds
from tig_batch.engine import (
    BaselineSearch,
    integrated_gradients,
    optimal_baselines,
    tangent_basis,
)

Shape = tuple[int, int, int]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ScalingGrid:
    """The values each curve sweeps, and the fixed value of every other variable."""

    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    n_steps: tuple[int, ...] = (8, 16, 32, 64)
    shapes: tuple[Shape, ...] = ((1, 28, 28), (3, 32, 32), (3, 64, 64))
    ranks: tuple[int, ...] = (8, 16, 32, 64)
    batch_size: int = 16
    ig_steps: int = 50  # plain IG's nodes where n_steps is not the variable
    search_steps: int = BaselineSearch().n_steps  # the search step's nodes (the default's)
    rank: int = 16
    repeats: int = 3
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE


@dataclass(frozen=True)
class ScalingPoint:
    """Images per second of each workload at one value of the variable (None: not measured)."""

    value: int
    plain_ig: float | None
    tangent_step: float | None


@dataclass(frozen=True)
class ScalingCurve:
    """One variable's curve and the log-log slope of the cost per image against it."""

    variable: str
    points: list[ScalingPoint]
    slopes: dict[str, float | None] = field(default_factory=dict)

    def statement(self) -> str:
        """How the cost per image grows with this variable, in words."""
        parts = []
        for name, slope in self.slopes.items():
            if slope is not None:
                parts.append(f"{name.replace('_', ' ')} ~ {self.variable}^{slope:.2f}")
        return f"cost per image: {', '.join(parts)}" if parts else "too few points for a slope"


def loglog_slope(values: list[int], images_per_s: list[float | None]) -> float | None:
    """Least-squares slope of log(seconds per image) against log(value)."""
    pairs = [(v, r) for v, r in zip(values, images_per_s, strict=True) if r]
    if len({v for v, _ in pairs}) < 2:
        return None
    x = np.log([v for v, _ in pairs])
    y = np.log([1.0 / r for _, r in pairs])
    return float(np.polyfit(x, y, 1)[0])


def _random_problem(shape: Shape, batch: int, rank: int, n_classes: int, seed: int = 0):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=generator)
    d = math.prod(shape)
    tangent = tangent_basis(torch.randn(batch, d, rank, generator=generator))
    target = torch.randint(0, n_classes, (batch,), generator=generator)
    return x, tangent, target


def measure_point(
    classifier: Classifier,
    shape: Shape,
    n_classes: int,
    batch: int,
    ig_steps: int,
    search_steps: int,
    rank: int,
    grid: ScalingGrid,
    plain_ig: bool = True,
) -> tuple[float | None, float]:
    """Images/s of plain IG (None unless ``plain_ig``) and of the one-step default search."""
    x, tangent, target = _random_problem(shape, batch, rank, n_classes)
    zero, ibs = torch.zeros_like(x), grid.internal_batch_size
    search = BaselineSearch(n_iterations=1, n_steps=search_steps)

    def plain() -> object:
        return integrated_gradients(classifier, x, zero, target, ig_steps, "midpoint", ibs)

    def step() -> object:
        return optimal_baselines(classifier, x, tangent, target, search=search,
                                 internal_batch_size=ibs)  # fmt: skip

    plain_rate = batch / median_seconds(plain, grid.repeats) if plain_ig else None
    return plain_rate, batch / median_seconds(step, grid.repeats)


def scaling_curves(
    bundle: Path,
    grid: ScalingGrid,
    runtime: Runtime,
    progress: Progress | None = None,
) -> list[ScalingCurve]:
    """The four curves: batch size, n_steps, image size (d = C*H*W) and tangent rank."""
    say = progress or (lambda message: None)
    loaded = load_bundle(bundle, runtime)
    own_shape, n_classes = tuple(loaded.manifest.input.shape), loaded.manifest.n_classes
    g = grid

    def at(batch: int = g.batch_size, steps: int | None = None, rank: int = g.rank, plain=True):  # type: ignore[no-untyped-def]
        ig_steps, search_steps = (g.ig_steps, g.search_steps) if steps is None else (steps, steps)
        return measure_point(
            loaded.classifier, own_shape, n_classes, batch, ig_steps, search_steps, rank, g, plain
        )

    curves = []
    for variable, values, call in (
        ("batch size", g.batch_sizes, lambda v: at(batch=v)),
        ("n_steps", g.n_steps, lambda v: at(steps=v)),
    ):
        say(f"scaling: {variable} {', '.join(map(str, values))}")
        curves.append(_curve(variable, values, [call(v) for v in values]))
    say("scaling: tangent rank " + ", ".join(map(str, g.ranks)))
    rank_points = [at(rank=r, plain=False) for r in g.ranks]  # plain IG has no rank
    curves.append(_curve("tangent rank", g.ranks, rank_points))
    own = (own_shape, n_classes, loaded.classifier)
    curves.append(_image_size_curve(g, own, runtime, say))
    return curves


def _curve(
    variable: str, values: tuple[int, ...], rates: list[tuple[float | None, float | None]]
) -> ScalingCurve:
    points = [ScalingPoint(v, p, s) for v, (p, s) in zip(values, rates, strict=True)]
    slopes = {
        "plain_ig": loglog_slope(list(values), [p.plain_ig for p in points]),
        "tangent_step": loglog_slope(list(values), [p.tangent_step for p in points]),
    }
    return ScalingCurve(variable, points, slopes)


def _image_size_curve(
    grid: ScalingGrid,
    own: tuple[tuple[int, ...], int, Classifier],
    runtime: Runtime,
    say: Progress,
) -> ScalingCurve:
    """Images/s against ``d``: the bundle's own shape uses its classifier, the others the
    untrained demo CNN exported to a temporary bundle."""
    from tig_batch.bench.backends import demo_bundle

    values, rates = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for shape in grid.shapes:
            name = "x".join(map(str, shape))
            n_classes = 10
            if tuple(shape) == own[0]:
                _, n_classes, classifier = own
            else:
                say(f"scaling: exporting the demo CNN for {name} images")
                path = Path(scratch) / name
                demo_bundle(path, shape)
                classifier = load_bundle(path, runtime).classifier
            say(f"scaling: image size {name}")
            values.append(math.prod(shape))
            rates.append(
                measure_point(
                    classifier,
                    shape,
                    n_classes,
                    grid.batch_size,
                    grid.ig_steps,
                    grid.search_steps,
                    grid.rank,
                    grid,
                )
            )
    order = sorted(range(len(values)), key=values.__getitem__)
    return _curve("d", tuple(values[i] for i in order), [rates[i] for i in order])
