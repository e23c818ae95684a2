"""Faithfulness and robustness of explanations: infidelity, max-sensitivity, sparseness, and the
rank correlation the model-randomisation check reports. Batched over images and perturbations.

Every metric takes the explained model through the :class:`Classifier` protocol, so it runs on
ONNX Runtime as on torch. Noise is drawn per image, seeded by ``(seed, sample_id)`` on a
stream of its own, so a score does not depend on the batch an image arrives in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier
from tig_batch.engine._baselines import seeded_noise, stream_seed
from tig_batch.engine._ig import (
    Target,
    forward_outputs,
    image_groups,
    resolve_target,
)

Explainer = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]
"""``explain(model, inputs, target) -> attributions`` shaped like ``inputs``: any method, e.g.
``lambda model, x, t: integrated_gradients(model, x, 0.0, t).attributions``."""

DEFAULT_INFIDELITY_SIGMA = 0.1
DEFAULT_SENSITIVITY_RADIUS = 0.02
DEFAULT_PERTURB_SAMPLES = 10

_INFIDELITY_STREAM = 1
_SENSITIVITY_STREAM = 2


def check_attributions(
    inputs: torch.Tensor, attributions: torch.Tensor, n_perturb_samples: int = 1
) -> None:
    """Refuse attributions that are not one map per input, shaped like the inputs."""
    if n_perturb_samples < 1:
        raise ValueError(f"n_perturb_samples must be >= 1, got {n_perturb_samples}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be images (B, C, H, W), got shape {tuple(inputs.shape)}")
    if attributions.shape != inputs.shape:
        raise ValueError(
            f"attributions must have the inputs' shape {tuple(inputs.shape)}, "
            f"got {tuple(attributions.shape)}"
        )


def repeated_noise(
    inputs: torch.Tensor,
    n_samples: int,
    seed: int,
    sample_ids: torch.Tensor | None,
    draw: str,
) -> torch.Tensor:
    """``n_samples`` standard noises per image, (B * n_samples, ...) image-major.

    Copy ``j`` of image ``id`` is seeded by ``(seed, n_samples * id + j)``.
    """
    if n_samples < 1:
        raise ValueError(f"n_perturb_samples must be >= 1, got {n_samples}")
    ids = torch.arange(inputs.shape[0]) if sample_ids is None else sample_ids.cpu()
    if ids.shape != (inputs.shape[0],):
        raise ValueError(f"sample_ids must have shape ({inputs.shape[0]},), got {tuple(ids.shape)}")
    copy_ids = (ids[:, None] * n_samples + torch.arange(n_samples)).flatten()
    return seeded_noise(inputs.repeat_interleave(n_samples, dim=0), seed, copy_ids, draw)


def infidelity_perturbations(
    inputs: torch.Tensor,
    sigma: float = DEFAULT_INFIDELITY_SIGMA,
    n_perturb_samples: int = DEFAULT_PERTURB_SAMPLES,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The perturbations ``I ~ N(0, sigma^2)`` :func:`infidelity` uses, (B * n, ...) image-major."""
    seed = stream_seed(seed, _INFIDELITY_STREAM)
    return sigma * repeated_noise(inputs, n_perturb_samples, seed, sample_ids, "normal")


def sensitivity_perturbations(
    inputs: torch.Tensor,
    radius: float = DEFAULT_SENSITIVITY_RADIUS,
    n_perturb_samples: int = DEFAULT_PERTURB_SAMPLES,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The perturbations ``U[-r, r]^d`` :func:`sensitivity_max` adds, (B * n, ...) image-major."""
    seed = stream_seed(seed, _SENSITIVITY_STREAM)
    uniform = repeated_noise(inputs, n_perturb_samples, seed, sample_ids, "uniform")
    return radius * (2 * uniform - 1)


def infidelity(
    model: Classifier,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: Target = None,
    sigma: float = DEFAULT_INFIDELITY_SIGMA,
    n_perturb_samples: int = DEFAULT_PERTURB_SAMPLES,
    normalize: bool = False,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019) per image (B,), as Captum's ``infidelity`` defines it.

    ``mean_j (I_j . Phi - (f_c(x) - f_c(x - I_j)))^2`` over ``n_perturb_samples`` Gaussian
    perturbations ``I_j ~ N(0, sigma^2)`` (:func:`infidelity_perturbations`): how far the
    attributions ``Phi``, read as a linear model of the output, miss the output's real change.
    Lower is more faithful. ``normalize`` rescales ``Phi`` by the least-squares factor
    ``beta = E[(I.Phi)(f(x) - f(x - I))] / E[(I.Phi)^2]`` first (Captum's ``normalize=True``),
    which makes the score blind to the attributions' scale: use it to compare methods whose
    units differ (gradients and IG). Forward passes only, ``internal_batch_size`` per call.
    """
    return infidelities(
        model, inputs, {"": attributions}, target, sigma, n_perturb_samples, normalize, seed,
        sample_ids, internal_batch_size,
    )[""]  # fmt: skip


def infidelities(
    model: Classifier,
    inputs: torch.Tensor,
    attributions: Mapping[str, torch.Tensor],
    target: Target = None,
    sigma: float = DEFAULT_INFIDELITY_SIGMA,
    n_perturb_samples: int = DEFAULT_PERTURB_SAMPLES,
    normalize: bool = False,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> dict[str, torch.Tensor]:
    """:func:`infidelity` of several attributions of the same inputs (e.g. one per method),
    by name: the perturbations depend only on the inputs and the seed, so they and their
    forward passes are shared, and each score is what :func:`infidelity` gives alone."""
    for value in attributions.values():
        check_attributions(inputs, value, n_perturb_samples)
    target = resolve_target(model, inputs, target)
    outputs = forward_outputs(model, inputs, target, internal_batch_size)
    ids = torch.arange(inputs.shape[0]) if sample_ids is None else sample_ids.cpu()
    n = n_perturb_samples
    dots: dict[str, list[torch.Tensor]] = {name: [] for name in attributions}
    diffs = []
    for rows in image_groups(inputs.shape[0], n, internal_batch_size):
        noise = infidelity_perturbations(inputs[rows], sigma, n, seed, ids[rows])
        perturbed = inputs[rows].repeat_interleave(n, dim=0) - noise
        changed = forward_outputs(
            model, perturbed, target[rows].repeat_interleave(n), internal_batch_size
        )
        diffs.append(outputs[rows, None] - changed.view(-1, n))
        for name, value in attributions.items():
            weighted = value[rows].repeat_interleave(n, dim=0) * noise
            dots[name].append(weighted.flatten(1).sum(1).view(-1, n))
    diff = torch.cat(diffs)
    return {name: _infidelity(torch.cat(parts), diff, normalize) for name, parts in dots.items()}


def _infidelity(dot: torch.Tensor, diff: torch.Tensor, normalize: bool) -> torch.Tensor:
    if normalize:
        squares = (dot * dot).sum(1)
        beta = (dot * diff).sum(1) / torch.where(squares == 0, torch.ones_like(squares), squares)
        dot = beta[:, None] * dot
    return ((dot - diff) ** 2).mean(1)


def sensitivity_max(
    model: Classifier,
    explain: Explainer,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    target: Target = None,
    radius: float = DEFAULT_SENSITIVITY_RADIUS,
    n_perturb_samples: int = DEFAULT_PERTURB_SAMPLES,
    seed: int = 0,
    sample_ids: torch.Tensor | None = None,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> torch.Tensor:
    """Max-sensitivity per image (B,), as Captum's ``sensitivity_max`` defines it.

    ``max_j ||e(x + u_j) - e(x)|| / ||e(x)||`` (Frobenius norms) over ``n_perturb_samples``
    inputs perturbed uniformly in the L-inf ball of radius ``radius``
    (:func:`sensitivity_perturbations`; not clipped to the value range, as in Captum), where
    ``e(x)`` is ``attributions`` and ``e`` is ``explain`` re-run on the perturbed inputs for the
    same targets. Lower is more robust. A zero ``e(x)`` divides by 1, as Captum does. Costs
    ``n_perturb_samples`` explanations per image; ``explain`` is called on at most
    ``max(internal_batch_size, n_perturb_samples)`` perturbed inputs at a time and bounds its
    own model calls.
    """
    check_attributions(inputs, attributions, n_perturb_samples)
    target = resolve_target(model, inputs, target)
    ids = torch.arange(inputs.shape[0]) if sample_ids is None else sample_ids.cpu()
    n = n_perturb_samples
    norms = attributions.flatten(1).norm(dim=1)
    norms = torch.where(norms == 0, torch.ones_like(norms), norms)
    worst = []
    for rows in image_groups(inputs.shape[0], n, internal_batch_size):
        noise = sensitivity_perturbations(inputs[rows], radius, n, seed, ids[rows])
        perturbed = inputs[rows].repeat_interleave(n, dim=0) + noise
        explained = explain(model, perturbed, target[rows].repeat_interleave(n))
        change = explained - attributions[rows].repeat_interleave(n, dim=0)
        worst.append(change.flatten(1).norm(dim=1).view(-1, n).amax(1))
    return torch.cat(worst) / norms


def sparseness(attributions: torch.Tensor) -> torch.Tensor:
    """Gini index of ``|attributions|`` per image (B,), in [0, 1 - 1/d].

    ``G = sum_i (2i - d - 1) a_(i) / (d sum_i a_(i))`` over the ``d`` absolute values sorted
    ascending (Chalasani et al. 2020; Quantus' ``Sparseness``, which adds 1e-7 to every value
    to avoid dividing by zero, where this returns NaN for an all-zero map). 0 when every
    feature carries the same weight, ``1 - 1/d`` when one feature carries all of it: higher is
    sparser.
    """
    values = attributions.flatten(1).abs().sort(dim=1).values
    d = values.shape[1]
    ranks = torch.arange(1, d + 1, dtype=values.dtype, device=values.device)
    return ((2 * ranks - d - 1) * values).sum(1) / (d * values.sum(1))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..d per row, ties given the mean of the ranks they span (as scipy's ``rankdata``)."""
    ordered, order = values.sort(dim=1, stable=True)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = new_group.long().cumsum(1) - 1
    positions = torch.arange(1, values.shape[1] + 1, dtype=torch.float64, device=values.device)
    positions = positions.expand_as(group)
    sums = torch.zeros_like(positions).scatter_add_(1, group, positions)
    counts = torch.zeros_like(positions).scatter_add_(1, group, torch.ones_like(positions))
    mean_rank = (sums / counts.clamp_min(1)).gather(1, group)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def rank_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation per image (B,) between two batches of maps of one shape.

    Pearson's correlation of the average ranks (ties share their mean rank, as
    ``scipy.stats.spearmanr``); NaN where a map is constant, which has no ranking.
    """
    if first.shape != second.shape:
        raise ValueError(
            f"maps must have one shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    ranks = [_average_ranks(m.flatten(1)) for m in (first, second)]
    centred = [r - r.mean(1, keepdim=True) for r in ranks]
    numerator = (centred[0] * centred[1]).sum(1)
    denominator = centred[0].norm(dim=1) * centred[1].norm(dim=1)
    return (numerator / denominator).to(first.dtype if first.is_floating_point() else torch.float64)
