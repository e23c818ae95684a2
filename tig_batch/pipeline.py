"""Explain batches with every method: the one path the CLI and Python data pipelines share.

Arrays in, result records out; no files. :func:`explain_batches` streams, so memory depends on
the batch size and never on how many batches come through.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from tig_batch._faithfulness import MetricsConfig, score
from tig_batch._methods import (
    GAP_METHODS,
    GRADIENT_METHODS,
    IG_METHODS,
    METHODS,
    NEEDS_REFERENCES,
    PAPER_METHODS,
    PATH_METHODS,
    explain_method,
)
from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, Manifold, call_logits
from tig_batch.engine import (
    BaselineSearch,
    Explainer,
    Rule,
    ValueRange,
    alignment,
    reference_gaps,
    tangent_space,
)
from tig_batch.errors import DataError

__all__ = [
    "GAP_METHODS",
    "GRADIENT_METHODS",
    "IG_METHODS",
    "METHODS",
    "PAPER_METHODS",
    "PATH_METHODS",
    "BatchLike",
    "ExplainConfig",
    "Explanations",
    "Flag",
    "explain",
    "explain_batches",
    "explain_method",
]


class Flag(enum.IntFlag):
    """Why a result needs care; stored per image and method as a bit field."""

    DEGENERATE = 1  # tangential base-point whose output gap fell below the threshold
    ZERO_EXPLANATION = 2  # the explanation is zero, so its alignment is undefined (NaN)
    NON_FINITE_INPUT = 4  # the image had NaN or Inf pixels and was skipped (results NaN)


@dataclass(frozen=True)
class ExplainConfig:
    """Everything that determines the explanations; outputs record it so reruns can be checked.

    ``method`` is the IG quadrature rule and ``n_steps`` its nodes for the final attributions
    (the base-point search has its own in ``search``). ``target`` is ``predicted``, ``label``
    (needs labels) or a class index. ``seed`` seeds everything random, per image: the uniform
    and Gaussian base-points, SmoothGrad's noise, a random search start, Expected Gradients'
    draws and the metrics' perturbations. The path methods beyond the paper have their own
    settings: Guided IG (``guidedig_*``, from the zero base-point), Blur IG (``blurig_*``) and
    Expected Gradients (``expectedgrad_samples``; its reference images are the job's
    ``references``). ``metrics`` says which faithfulness metrics are computed. How the models
    run (backend, device, threads, samples per call) is not here but in
    :class:`~tig_batch.backends.Runtime`.
    """

    methods: tuple[str, ...] = PAPER_METHODS
    n_steps: int = 50
    method: Rule = "midpoint"
    target: str | int = "predicted"
    search: BaselineSearch = field(default_factory=BaselineSearch)
    value_range: ValueRange = (0.0, 1.0)
    seed: int = 0
    gaussian_sigma: float = 0.5
    blur_sigma: float = 4.0
    smoothgrad_sigma: float = 0.02
    smoothgrad_samples: int = 25
    guidedig_n_steps: int = 200
    guidedig_fraction: float = 0.25
    guidedig_max_dist: float = 0.02
    blurig_max_sigma: float = 50.0
    blurig_n_steps: int = 100
    expectedgrad_samples: int = 50
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    rtol: float = 1e-6
    on_bad_image: Literal["error", "skip"] = "error"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(
                f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                f"{', '.join(METHODS)}"
            )
        for name in ("guidedig_n_steps", "blurig_n_steps", "expectedgrad_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.guidedig_fraction <= 1 or not 0 <= self.guidedig_max_dist <= 1:
            raise ValueError(
                "need 0 < guidedig_fraction <= 1 and 0 <= guidedig_max_dist <= 1, got "
                f"{self.guidedig_fraction} and {self.guidedig_max_dist}"
            )
        if not self.blurig_max_sigma > 0:
            raise ValueError(f"blurig_max_sigma must be > 0, got {self.blurig_max_sigma}")
        if self.on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if isinstance(self.target, str) and self.target not in ("predicted", "label"):
            raise ValueError(
                f"target must be 'predicted', 'label' or a class index, got {self.target!r}"
            )


@dataclass(frozen=True)
class Explanations:
    """One batch's results, every tensor's first dimension the batch.

    ``delta`` and ``output_gap`` hold the methods that have them (``GAP_METHODS``: IG and the
    path methods); ``reference_gap`` is the zero base-point's output gap, the unit of gap
    fractions (None when none of those runs). ``baselines`` is the tangential base-point and
    ``frontier`` (B, F) its search's best ``mu`` at each of ``FRONTIER_GAP_FRACTIONS`` (both
    None when that method is not run). ``metrics``: metric -> method -> (B,) scores.
    """

    sample_ids: torch.Tensor
    target: torch.Tensor
    prediction: torch.Tensor
    tangent_rank: torch.Tensor
    chance_level: torch.Tensor
    attributions: dict[str, torch.Tensor]
    alignment: dict[str, torch.Tensor]
    delta: dict[str, torch.Tensor]
    output_gap: dict[str, torch.Tensor]
    flags: dict[str, torch.Tensor]
    baselines: torch.Tensor | None = None
    reference_gap: torch.Tensor | None = None
    frontier: torch.Tensor | None = None
    metrics: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)


class BatchLike(Protocol):  # may also carry ``start`` and ``rows``: see explain_batches
    """An item of :func:`explain_batches` besides bare arrays, e.g. the data reader's batches."""

    images: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor | None


def _targets(
    classifier: Classifier, images: torch.Tensor, labels: torch.Tensor | None, config: ExplainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = call_logits(classifier, images)
    prediction, n_classes = logits.argmax(1), logits.shape[1]
    if config.target == "predicted":
        return prediction, prediction
    if config.target == "label":
        if labels is None:
            raise DataError("target 'label' needs labels, and this input has none")
        target = labels.to(prediction.device, torch.long)
    else:
        target = torch.full_like(prediction, int(config.target))
    outside = (target < 0) | (target >= n_classes)
    if bool(outside.any()):
        raise DataError(
            f"target class {int(target[outside][0])} does not exist: the classifier has "
            f"{n_classes} classes (0 to {n_classes - 1})"
        )
    return target, prediction


def _explain_finite(
    classifier: Classifier,
    manifold: Manifold,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    sample_ids: torch.Tensor,
    config: ExplainConfig,
    ibs: int,
    references: torch.Tensor | None,
) -> Explanations:
    target, prediction = _targets(classifier, images, labels, config)
    tangent = tangent_space(manifold, images, config.rtol)
    attributions, deltas, gaps, flags = {}, {}, {}, {}
    baselines = frontier = reference = None
    if any(name in GAP_METHODS for name in config.methods):
        reference = reference_gaps(classifier, images, target, config.value_range)
    for name in config.methods:
        flags[name] = torch.zeros(len(images), dtype=torch.int64)
        result, search = explain_method(
            name, classifier, manifold, images, target, sample_ids, config, ibs, references,
            tangent,
        )  # fmt: skip
        if search is not None:
            baselines, frontier = search.baselines, search.frontier
            flags[name][search.degenerate.cpu()] |= Flag.DEGENERATE
        if result.delta is not None and result.output_gap is not None:
            deltas[name], gaps[name] = result.delta, result.output_gap
        attributions[name] = result.attributions
    mu = {name: alignment(value, tangent.basis) for name, value in attributions.items()}
    for name, value in mu.items():
        flags[name][torch.isnan(value).cpu()] |= Flag.ZERO_EXPLANATION

    def explainer(name: str, ids: torch.Tensor) -> Explainer:
        def run(model: Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return explain_method(
                name, model, manifold, inputs, target, ids, config, ibs, references
            )[0].attributions

        return run

    metrics = score(
        classifier, images, attributions, target, sample_ids, config.metrics,
        value_range=config.value_range, blur_sigma=config.blur_sigma, seed=config.seed,
        internal_batch_size=ibs, explainer=explainer,
    )  # fmt: skip
    return Explanations(
        sample_ids, target, prediction, tangent.rank, tangent.chance_level,
        attributions, mu, deltas, gaps, flags, baselines, reference, frontier, metrics,
    )  # fmt: skip


def explain(
    classifier: Classifier,
    manifold: Manifold,
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
    sample_ids: torch.Tensor | np.ndarray | None = None,
    config: ExplainConfig | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    references: torch.Tensor | np.ndarray | None = None,
) -> Explanations:
    """Explain one batch of images (B, C, H, W) with every configured method, and score
    each explanation with the configured metrics.

    ``sample_ids`` (default ``0..B-1``) seed everything random per image (random base-points,
    SmoothGrad, Expected Gradients' draws, the metrics' perturbations), so an image's results
    do not depend on the batch it arrives in. ``references`` (N, C, H, W): the images
    Expected Gradients draws base-points from (needed for ``expectedgrad`` only). Images with
    NaN or Inf pixels raise :class:`DataError`, or with ``on_bad_image="skip"`` get NaN
    results and the ``NON_FINITE_INPUT`` flag. At most ``internal_batch_size`` samples go
    through the classifier per call.
    """
    config = config or ExplainConfig()
    images = torch.as_tensor(images)
    if not images.is_floating_point():
        images = images.float()
    labels = None if labels is None else torch.as_tensor(labels)
    ids = torch.arange(len(images)) if sample_ids is None else torch.as_tensor(sample_ids)
    references = _references(references, images, config)
    finite = torch.isfinite(images.flatten(1)).all(1)
    if bool(finite.all()):
        return _explain_finite(
            classifier, manifold, images, labels, ids, config, internal_batch_size, references
        )
    if config.on_bad_image == "error":
        bad = ids[~finite.cpu()].tolist()
        raise DataError(
            f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} have NaN or Inf pixels; "
            "use --on-bad-image skip to flag and skip them"
        )
    if not bool(finite.any()):
        raise DataError("every image in this batch has NaN or Inf pixels")
    kept = _explain_finite(
        classifier, manifold, images[finite], None if labels is None else labels[finite],
        ids[finite.cpu()], config, internal_batch_size, references,
    )  # fmt: skip
    return _fill_skipped(kept, finite, ids, images)


def _references(
    references: torch.Tensor | np.ndarray | None, images: torch.Tensor, config: ExplainConfig
) -> torch.Tensor | None:
    """Expected Gradients' reference images on the images' device and dtype; an error when
    it runs without them."""
    if "expectedgrad" not in config.methods:
        return None
    if references is None:
        raise ValueError(NEEDS_REFERENCES)
    return torch.as_tensor(references).to(images.device, images.dtype)


def _fill_skipped(
    kept: Explanations, finite: torch.Tensor, ids: torch.Tensor, images: torch.Tensor
) -> Explanations:
    """Scatter a subset's results back to the full batch: NaN (or -1) for skipped images."""

    def spread(value: torch.Tensor, fill: float) -> torch.Tensor:
        full = torch.full(
            (len(finite), *value.shape[1:]), fill, dtype=value.dtype, device=value.device
        )
        full[finite.to(value.device)] = value
        return full

    def spread_all(values: dict[str, torch.Tensor], fill: float) -> dict[str, torch.Tensor]:
        return {name: spread(value, fill) for name, value in values.items()}

    flags = spread_all(kept.flags, 0)
    for value in flags.values():
        value[~finite.cpu()] |= Flag.NON_FINITE_INPUT
    return Explanations(
        ids, spread(kept.target, -1), spread(kept.prediction, -1), spread(kept.tangent_rank, 0),
        spread(kept.chance_level, torch.nan), spread_all(kept.attributions, torch.nan),
        spread_all(kept.alignment, torch.nan), spread_all(kept.delta, torch.nan),
        spread_all(kept.output_gap, torch.nan), flags,
        *(None if value is None else spread(value, torch.nan)
          for value in (kept.baselines, kept.reference_gap, kept.frontier)),
        {name: spread_all(values, torch.nan) for name, values in kept.metrics.items()},
    )  # fmt: skip


def explain_batches(
    classifier: Classifier,
    manifold: Manifold,
    batches: Iterable[BatchLike | torch.Tensor | np.ndarray],
    config: ExplainConfig | None = None,
    first_id: int = 0,
    device: torch.device | str | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    references: torch.Tensor | np.ndarray | None = None,
) -> Iterator[Explanations]:
    """Explain a stream of batches (arrays, tensors, or the data reader's batches), lazily.

    Images are numbered from ``first_id`` and the numbers seed each image's random
    base-points, so results do not depend on how the stream is batched. A batch that carries
    ``start`` (the data reader's: its first image's index in the shard) is numbered from
    ``first_id + start``, so a stream that skips batches, as a resumed run does, numbers the
    rest exactly as the full stream would; one that carries ``rows`` (the reader's batches of
    selected images) numbers its images ``first_id + rows``. Images are moved to ``device``
    when one is given; ``internal_batch_size`` bounds the samples per model call;
    ``references`` are Expected Gradients' reference images (moved to ``device`` once).
    """
    if references is not None:
        references = torch.as_tensor(references, device=device)
    next_id = first_id
    for batch in batches:
        bare = isinstance(batch, torch.Tensor | np.ndarray)
        images = batch if bare else batch.images
        labels = None if bare else batch.labels
        start = first_id + batch.start if hasattr(batch, "start") else next_id
        ids = torch.arange(start, start + len(images))
        if getattr(batch, "rows", None) is not None:
            ids = first_id + torch.as_tensor(batch.rows, dtype=torch.long)
        next_id = start + len(images)
        images = torch.as_tensor(images, device=device)
        yield explain(
            classifier, manifold, images, labels, ids, config, internal_batch_size, references
        )
