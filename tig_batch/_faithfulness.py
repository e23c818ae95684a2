"""Faithfulness metrics of a batch's explanations: which ones ``explain`` computes, and how.

:class:`MetricsConfig` is the one place their settings live (it sits in
:class:`~tig_batch.pipeline.ExplainConfig`, so outputs record it); :func:`score` runs the
engine's metrics on every method's attributions. Arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from tig_batch.backends import Classifier
from tig_batch.engine import (
    Explainer,
    ValueRange,
    deletion_insertion,
    infidelities,
    sensitivity_max,
    sparseness,
)
from tig_batch.engine._ig import image_groups

MetricName = Literal["deletion", "insertion", "infidelity", "sensitivity", "sparseness"]
METRICS: tuple[str, ...] = get_args(MetricName)
#: On by default: together about a third of one 50-node IG per method (docs/performance.md).
#: Max-sensitivity re-runs the method ``sensitivity_samples`` times, so it is opt-in.
DEFAULT_METRICS = ("deletion", "insertion", "infidelity", "sparseness")
Replacement = Literal["zero", "blur"]

#: Which direction is better, per metric: what the report says beside each column.
BETTER = {
    "deletion": "lower",
    "insertion": "higher",
    "infidelity": "lower",
    "sensitivity": "lower",
    "sparseness": "higher",
}


@dataclass(frozen=True)
class MetricsConfig:
    """Which faithfulness metrics ``explain`` computes per image and method, and their settings.

    ``names`` (any of :data:`METRICS`, kept in that order; empty: none): ``deletion`` and
    ``insertion`` (their AUCs, one shared pass of ``deletion_steps`` steps; a removed pixel
    becomes the zero base-point's value or, with ``deletion_replacement="blur"``, the blurred
    base-point's with the config's ``blur_sigma``), ``infidelity`` (``infidelity_samples``
    Gaussian perturbations of standard deviation ``infidelity_sigma``; ``infidelity_normalize``
    rescales the attributions first, Captum's ``normalize``), ``sensitivity``
    (max-sensitivity: the method re-run on ``sensitivity_samples`` inputs perturbed uniformly
    within ``sensitivity_radius``; costs that many explanations per image) and
    ``sparseness`` (the Gini index, no model calls). Noise is seeded per image by the
    config's ``seed``. Definitions: docs/method.md.
    """

    names: tuple[str, ...] = DEFAULT_METRICS
    deletion_steps: int = 20
    deletion_replacement: Replacement = "zero"
    infidelity_sigma: float = 0.1
    infidelity_samples: int = 10
    infidelity_normalize: bool = False
    sensitivity_radius: float = 0.02
    sensitivity_samples: int = 10

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        unknown = [name for name in names if name not in METRICS]
        if unknown:
            raise ValueError(
                f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}"
            )
        object.__setattr__(self, "names", tuple(m for m in METRICS if m in names))
        if self.deletion_replacement not in get_args(Replacement):
            raise ValueError(
                f"deletion_replacement must be 'zero' or 'blur', got {self.deletion_replacement!r}"
            )
        for name in ("deletion_steps", "infidelity_samples", "sensitivity_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("infidelity_sigma", "sensitivity_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def score(
    classifier: Classifier,
    images: torch.Tensor,
    attributions: dict[str, torch.Tensor],
    target: torch.Tensor,
    sample_ids: torch.Tensor,
    metrics: MetricsConfig,
    *,
    value_range: ValueRange,
    blur_sigma: float,
    seed: int,
    internal_batch_size: int,
    explainer: Callable[[str, torch.Tensor], Explainer] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Every metric of ``metrics`` for every method's attributions: metric -> method -> (B,).

    ``explainer(method, sample_ids)`` gives the method as an :data:`Explainer` for inputs
    whose images have ``sample_ids`` (their seeds): max-sensitivity re-runs it, each perturbed
    copy of an image seeded like the image, so only the input changes. Needed only for
    ``sensitivity``.
    """
    scores: dict[str, dict[str, torch.Tensor]] = {name: {} for name in metrics.names}
    for method, value in attributions.items():
        if {"deletion", "insertion"} & set(metrics.names):
            flips = deletion_insertion(
                classifier, images, value, target, metrics.deletion_steps,
                metrics.deletion_replacement, "output", value_range, blur_sigma,
                internal_batch_size,
            )  # fmt: skip
            for name, auc in (("deletion", flips.deletion_auc), ("insertion", flips.insertion_auc)):
                if name in scores:
                    scores[name][method] = auc
        if "sensitivity" in scores:
            if explainer is None:
                raise ValueError("max-sensitivity re-runs the method: give explainer")
            scores["sensitivity"][method] = _sensitivity(
                classifier, images, value, target, sample_ids, metrics, seed,
                internal_batch_size, lambda ids, method=method: explainer(method, ids),
            )  # fmt: skip
        if "sparseness" in scores:
            scores["sparseness"][method] = sparseness(value)
    if "infidelity" in scores:  # one set of perturbations and forward passes for every method
        scores["infidelity"] = infidelities(
            classifier, images, attributions, target, metrics.infidelity_sigma,
            metrics.infidelity_samples, metrics.infidelity_normalize, seed, sample_ids,
            internal_batch_size,
        )  # fmt: skip
    return {name: scores[name] for name in metrics.names}


def _sensitivity(
    classifier: Classifier,
    images: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    sample_ids: torch.Tensor,
    metrics: MetricsConfig,
    seed: int,
    internal_batch_size: int,
    explainer: Callable[[torch.Tensor], Explainer],
) -> torch.Tensor:
    """Max-sensitivity in groups of images whose perturbed copies fit one internal batch, so
    the method sees at most ``max(internal_batch_size, n)`` inputs at once and each copy
    carries its image's seed."""
    n = metrics.sensitivity_samples
    parts = []
    for rows in image_groups(len(images), n, internal_batch_size):
        ids = sample_ids[rows]
        parts.append(
            sensitivity_max(
                classifier, explainer(ids.repeat_interleave(n)), images[rows],
                attributions[rows], target[rows], metrics.sensitivity_radius, n, seed, ids,
                len(ids) * n,
            )
        )  # fmt: skip
    return torch.cat(parts)
