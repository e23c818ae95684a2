"""``bench e2e``'s tangential half: the paper-style reference against tig-batch's searches.

Both sides explain the same digits against the same tangent bases and end with the same final
IG; :func:`tangential` times them in alternation (see :mod:`tig_batch.bench.e2e`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tig_batch.backends import Runtime, load_bundle
from tig_batch.bench._measure import alternate
from tig_batch.bench.reference import reference_ig, reference_tangential
from tig_batch.engine import (
    BaselineSearch,
    alignment,
    integrated_gradients,
    optimal_baselines,
    tangent_space,
)

if TYPE_CHECKING:
    from tig_batch.bench.e2e import E2ESettings, Progress


@dataclass(frozen=True)
class TangentialRow:
    """One tangential contender; ``mean_mu``/``mean_output_gap`` of the final IG on the images
    it explained, ``mean_mu_shared`` on the reference's images (the fair comparison)."""

    name: str
    images: int
    images_per_s: float
    speedup_vs_reference: float
    mean_mu: float
    mean_mu_shared: float
    mean_output_gap: float
    mean_gap_fraction: float  # of the zero base-point's gap
    keeping_min_gap: float  # share of images whose gap keeps the reference's min_gap
    mean_search_mu: float
    gradient_evaluations_per_image: float
    peak_rss_mib: float | None


def _explained(module: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x).gather(1, target[:, None]).squeeze(1)


def tangential(
    bundle: Path,
    images: torch.Tensor,
    target: torch.Tensor,
    settings: E2ESettings,
    runtime: Runtime,
    searches: Mapping[str, BaselineSearch],
    say: Progress,
) -> tuple[list[TangentialRow], float]:
    """The reference on the first ``reference_images`` images against each search on all.

    Both sides explain against the same tangent bases (computed once, outside the timings:
    the returned rate, images/s, is that shared step's) and end with an ``n_steps`` IG.
    """
    onnx = load_bundle(bundle, runtime)
    torch_runtime = dataclasses.replace(runtime, backend="torch")
    module = load_bundle(bundle, torch_runtime).classifier.module  # type: ignore[attr-defined]
    start = time.perf_counter()
    tangent = tangent_space(onnx.manifold, images)
    tangent_rate = len(images) / (time.perf_counter() - start)
    basis, k, n_ref = tangent.basis, settings.n_steps, settings.reference_images

    def ours(search: BaselineSearch) -> Callable[[], Any]:
        def run() -> Any:
            found = optimal_baselines(
                onnx.classifier, images, tangent, target, search=search,
                internal_batch_size=settings.internal_batch_size,
            )  # fmt: skip
            final = integrated_gradients(
                onnx.classifier, images, found.baselines, target, k, "midpoint",
                settings.internal_batch_size,
            )  # fmt: skip
            return found, final.attributions

        return run

    def reference() -> Any:
        x, t = images[:n_ref], target[:n_ref]
        found = reference_tangential(module, x, t, basis[:n_ref], settings.reference)
        return found, reference_ig(module, x, found.baselines, t, k)

    calls = {name: ours(search_with_overrides(s, settings)) for name, s in searches.items()}
    calls["paper-style reference"] = reference
    rounds = settings.tangential_repeats
    say(f"tangential: {', '.join(calls)} ({rounds} alternating rounds)")
    _warm_up(onnx.classifier, images, tangent, target)
    runs = alternate(calls, rounds, warm_up=False)
    rows = []
    f_x = _explained(module, images, target)
    zero_gap = f_x - _explained(module, torch.zeros_like(images), target)
    for name, m in runs.items():
        found, attributions = m.output
        count, seconds, peak = len(attributions), statistics.median(m.seconds), m.peak_rss_mib
        mu = alignment(attributions, basis[:count])
        gap = f_x[:count] - _explained(module, found.baselines, target[:count])
        fraction = gap / zero_gap[:count]
        rows.append(
            TangentialRow(
                name, count, count / seconds, math.nan, float(mu.mean()),
                float(mu[:n_ref].mean()), float(gap.mean()), float(fraction.mean()),
                float((fraction >= settings.reference.min_gap).float().mean()),
                float(found.alignment.mean()), found.n_gradient_evaluations / count, peak,
            )
        )  # fmt: skip
    reference_rate = rows[-1].images_per_s
    rows = [
        dataclasses.replace(r, speedup_vs_reference=r.images_per_s / reference_rate) for r in rows
    ]
    return rows, tangent_rate


def search_with_overrides(search: BaselineSearch, settings: E2ESettings) -> BaselineSearch:
    """``search`` with the settings' overrides of every contender (only ``--quick`` sets them)."""
    changes = {}
    if settings.search_iterations is not None:
        changes["n_iterations"] = settings.search_iterations
    if settings.search_n_steps is not None:
        changes["n_steps"] = settings.search_n_steps
    return dataclasses.replace(search, **changes)


def _warm_up(classifier: Any, images: torch.Tensor, tangent: Any, target: torch.Tensor) -> None:
    """ORT's first runs (graph optimisation, arena growth) are not the searches' to pay."""
    search = BaselineSearch(n_iterations=1)
    optimal_baselines(classifier, images, tangent, target, search=search)
