"""The paper's open questions as ablations: what each varies, and running them with a cache.

An ablation is a list of variants, each one explainer and its settings, run on the first test
images with the engine calls the pipeline makes (``optimal_baselines``,
``integrated_gradients``, ``alignment``), so that a variant at the main run's settings
reproduces the main comparison's numbers. Each variant's per-image results are cached under a
key of everything that determines them (not its label: rows of different ablations may share
a variant and its cached result).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tig_batch.backends import BackendName, Bundle
from tig_batch.engine import (
    BaselineSearch,
    alignment,
    gradient,
    integrated_gradients,
    make_baselines,
    optimal_baselines,
    tangent_space,
)
from tig_batch.errors import ModelError
from tig_batch.pipeline import ExplainConfig
from tig_batch.report import pyplot, save_figure
from tig_batch.study._settings import Settings, digest, open_bundle

# The grids --all-ablations runs.
SIGMAS = (0.1, 0.25, 0.5, 1.0)
LATENTS = (8, 16, 32, 64)
SEARCH_LRS = (0.1, 0.5, 2.0)
SEARCH_ITERATIONS = (10, 50)
TARGET_MUS = (0.7, 0.8)
SURROGATE_LONG = 100  # the surrogate's longer run in the optimiser ablation
MIN_GAPS = (0.0, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class Variant:
    """One row of an ablation: an explainer (``tangential``, a base-point kind or
    ``gradient``) and its settings. Adding a variant to an ablation is one line."""

    label: str
    method: str
    search: BaselineSearch | None = None
    sigma: float | None = None
    latent: int | None = None


@dataclass(frozen=True)
class Ablation:
    """One question (``title``, ``question``: the page's heading and text) and its variants."""

    name: str
    title: str
    question: str
    variants: tuple[Variant, ...]


def sigma_ablation(sigmas: Sequence[float]) -> Ablation:
    return Ablation(
        "sigma", "Gaussian base-point sigma",
        "How does the noise scale of the Gaussian base-point `clip(x + N(0, sigma^2))` change "
        "its alignment and its output gap?",
        tuple(Variant(f"sigma {s:g}", "gaussian", sigma=s) for s in sigmas),
    )  # fmt: skip


def latent_ablation(latents: Sequence[int], search: BaselineSearch) -> Ablation:
    rows = []
    for n in latents:  # the chance level sqrt(r/d) grows with n: compare mu against it
        rows += [
            Variant(f"n={n} tangential", "tangential", search=search, latent=n),
            Variant(f"n={n} zero", "zero", latent=n),
            Variant(f"n={n} gradient", "gradient", latent=n),
        ]
    return Ablation(
        "latent", "Tangent dimension n",
        "How do alignment and the chance level change with the autoencoder's latent size n "
        "(one autoencoder trained per n)?",
        tuple(rows),
    )  # fmt: skip


def search_ablation(
    search: BaselineSearch, lrs: Sequence[float], iterations: Sequence[int]
) -> Ablation:
    return Ablation(
        "search", "Optimiser learning rate x iterations",
        "How much alignment do the step length (normalised l2 step, input units) and the number "
        "of ascent iterations buy, and at what cost in output gap?",
        tuple(
            Variant(f"lr {lr:g}, {k} iterations", "tangential",
                    search=replace(search, lr=lr, n_iterations=k))
            for lr in lrs for k in iterations
        ),
    )  # fmt: skip


def adaptive_ablation(search: BaselineSearch, target_mus: Sequence[float]) -> Ablation:
    adaptive = replace(search, adaptive_lr=True)
    variants = [
        Variant(f"fixed: {search.n_iterations} iterations", "tangential", search=search),
        *(Variant(f"stop at mu >= {t:g}", "tangential", search=replace(search, target_mu=t))
          for t in target_mus),
        Variant("per-image step size", "tangential", search=adaptive),
        Variant(f"per-image step size, stop at mu >= {target_mus[0]:g}", "tangential",
                search=replace(adaptive, target_mu=target_mus[0])),
    ]  # fmt: skip
    return Ablation(
        "adaptive", "Fixed vs adaptive steps",
        f"Every image takes {search.n_iterations} ascent steps of one length, or stops once its "
        "mu (measured with the search's own quadrature) reaches a target, or adapts its own "
        "step length (`adaptive_lr`: grown after a step that raised its mu, cut after one "
        "that lowered it): how many gradient evaluations does that save, and what does it "
        "cost in mu and in output gap?",
        tuple(variants),
    )  # fmt: skip


def optimizer_ablation(search: BaselineSearch) -> Ablation:
    """The ablations' paper-style ``search`` against tig-batch's optimisers, each with and
    without the gap constraint; the ``surrogate`` rows use ``explain``'s search settings."""
    ours = BaselineSearch()
    projection = replace(ours, optimizer="projection")
    variants = [
        Variant(f"ascent, {search.n_iterations} iterations", "tangential",
                search=replace(search, min_gap=0.0)),
        Variant(f"ascent, {search.n_iterations} iterations, min_gap 0.5", "tangential",
                search=replace(search, min_gap=0.5)),
        Variant(f"projection, {projection.n_iterations} iterations", "tangential",
                search=replace(projection, min_gap=0.0)),
        Variant(f"projection, {projection.n_iterations} iterations, min_gap 0.5", "tangential",
                search=replace(projection, min_gap=0.5)),
        Variant(f"surrogate, {ours.n_iterations} iterations", "tangential",
                search=replace(ours, min_gap=0.0)),
        Variant(f"surrogate, {ours.n_iterations} iterations, min_gap 0.5 (explain's default)",
                "tangential", search=replace(ours, min_gap=0.5)),
        Variant(f"surrogate, {SURROGATE_LONG} iterations, min_gap 0.5", "tangential",
                search=replace(ours, min_gap=0.5, n_iterations=SURROGATE_LONG)),
    ]  # fmt: skip
    return Ablation(
        "optimizer", "Base-point optimisers, with and without the gap constraint",
        "The paper-style gradient ascent, the closed-form `projection` step (blind to the gap) "
        "and the `surrogate` step (the frozen-path problem with the value range and the "
        "linearised gap constraint solved each step), each unconstrained (the paper's problem) "
        "and keeping half of the zero base-point's output gap (`min_gap 0.5`): mean mu and "
        "output gap at the gradient evaluations each spends.",
        tuple(variants),
    )  # fmt: skip


def min_gap_ablation(min_gaps: Sequence[float]) -> Ablation:
    """``explain``'s search constrained at each ``min_gap``: the alignment-gap frontier, one
    search per point."""
    return Ablation(
        "min_gap", "The gap constraint",
        "How much alignment does each share of the zero base-point's output gap cost? The "
        "default search, required to keep `min_gap` of that gap (0: the paper's unconstrained "
        "problem).",
        tuple(
            Variant(f"min_gap {g:g}", "tangential", search=BaselineSearch(min_gap=g))
            for g in min_gaps
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class VariantResult:
    """Per image: ``mu``, chance level, output gap (NaN for gradients), search iterations and
    model gradient evaluations (search only); and the seconds the variant took."""

    mu: np.ndarray
    chance: np.ndarray
    gap: np.ndarray
    iterations: np.ndarray
    evaluations: np.ndarray
    degenerate: np.ndarray
    seconds: float


def run_variant(
    bundle: Bundle, images: torch.Tensor, ids: torch.Tensor, variant: Variant,
    config: ExplainConfig,
) -> dict[str, np.ndarray]:  # fmt: skip
    """One variant on one batch: the engine calls the pipeline makes for that method."""
    model, n = bundle.classifier, len(images)
    target = model.logits(images).argmax(1)
    tangent = tangent_space(bundle.manifold, images, config.rtol)
    ibs = bundle.runtime.internal_batch_size
    iterations, evaluations = np.zeros(n), np.zeros(n)
    degenerate = np.zeros(n, dtype=bool)
    if variant.method == "gradient":
        result = gradient(model, images, target, ibs)
    else:
        if variant.method == "tangential":
            search = optimal_baselines(
                model, images, tangent, target, config.value_range,
                variant.search or config.search, ids, ibs, config.seed,
            )  # fmt: skip
            baselines = search.baselines
            iterations = search.iterations.cpu().numpy().astype(float)
            evaluations = np.full(n, search.n_gradient_evaluations / n)
            degenerate = search.degenerate.cpu().numpy()
        else:
            sigma = config.gaussian_sigma if variant.sigma is None else variant.sigma
            baselines = make_baselines(
                variant.method, images, config.value_range, sigma=sigma, seed=config.seed,
                sample_ids=ids,
            )  # fmt: skip
        result = integrated_gradients(
            model, images, baselines, target, config.n_steps, config.method, ibs
        )
    gap = np.full(n, np.nan) if result.output_gap is None else result.output_gap.cpu().numpy()
    return {
        "mu": alignment(result.attributions, tangent.basis).cpu().numpy(),
        "chance": tangent.chance_level.cpu().numpy(),
        "gap": gap,
        "iterations": iterations,
        "evaluations": evaluations,
        "degenerate": degenerate,
    }


def ablation_result(
    bundle: Bundle, data: dict[str, np.ndarray], variant: Variant, config: ExplainConfig,
    batch_size: int, cache: Path, bar: tqdm, cached_only: bool = False,
) -> VariantResult | None:  # fmt: skip
    """A variant's results over the ablation images, computed once and cached in ``cache``
    (None when it is not cached and ``cached_only``)."""
    what = [variant.method, variant.search, variant.sigma]  # not the label: rows may share
    key = digest([what, config, bundle.manifest.files, data["ids"].tolist(), batch_size])
    path = cache / f"{key}.npz"
    if path.is_file():
        stored = np.load(path)
        bar.update(len(data["ids"]))
        return VariantResult(**{k: stored[k] for k in stored.files if k != "seconds"},
                             seconds=float(stored["seconds"]))  # fmt: skip
    if cached_only:
        return None
    start, parts = time.perf_counter(), []
    for first in range(0, len(data["ids"]), batch_size):
        rows = slice(first, first + batch_size)
        images = torch.as_tensor(data["images"][rows])
        ids = torch.arange(first, first + len(images))  # dataset positions, as explain numbers
        parts.append(run_variant(bundle, images, ids, variant, config))
        bar.update(len(images))
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, seconds=seconds, **merged)
    return VariantResult(**merged, seconds=seconds)


def run_ablation(
    ablation: Ablation, data: dict[str, np.ndarray], models: Path, settings: Settings,
    backend: BackendName, threads: int | None, quiet: bool = False, cached_only: bool = False,
) -> dict[str, VariantResult]:  # fmt: skip
    """Every variant of one ablation on the ablation images (cached per variant in
    ``models/ablations``); with ``cached_only``, only the variants already cached, and none
    whose bundle is missing."""
    results: dict[str, VariantResult] = {}
    bundles: dict[int | None, Bundle] = {}
    total = len(ablation.variants) * len(data["ids"])
    cache = models / "ablations"
    with tqdm(total=total, desc=f"ablation {ablation.name}", unit="img", disable=quiet,
              file=sys.stderr) as bar:  # fmt: skip
        for variant in ablation.variants:
            if variant.latent not in bundles:
                latent = variant.latent or settings.training.latent_dim
                try:
                    bundles[variant.latent] = open_bundle(models, latent, backend, threads)
                except ModelError:
                    if not cached_only:
                        raise
                    continue
            result = ablation_result(
                bundles[variant.latent], data, variant, settings.ablation_config,
                settings.storage.batch_size, cache, bar, cached_only,
            )  # fmt: skip
            if result is not None:
                results[variant.label] = result
    return results


def cost_figure(ablations: Sequence[tuple[Ablation, dict[str, VariantResult]]], out: Path) -> Path:
    """``ablations.png``: each tangential variant's mean mu and mean output gap against the
    gradient evaluations its search spent per image; one colour per ablation. The latent
    ablation is left out: its mu is measured against other tangent spaces."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    shown = [
        (a, r) for a, r in ablations
        if a.name != "latent" and any(v.method == "tangential" for v in a.variants)
    ]  # fmt: skip
    for colour, (ablation, results) in enumerate(shown):
        for variant in ablation.variants:
            if variant.method != "tangential" or variant.label not in results:
                continue
            r = results[variant.label]
            cost = float(r.evaluations.mean())
            values = (float(np.nanmean(r.mu)), float(np.nanmean(r.gap)))
            for ax, value in zip(axes, values, strict=True):
                ax.scatter(cost, value, color=f"C{colour}")
                ax.annotate(variant.label, (cost, value), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        axes[0].scatter([], [], color=f"C{colour}", label=ablation.title)
    axes[0].set(xlabel="search gradient evaluations per image", ylabel="mean mu")
    axes[1].set(xlabel="search gradient evaluations per image", ylabel="mean output gap")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_figure(fig, out / "ablations.png")
