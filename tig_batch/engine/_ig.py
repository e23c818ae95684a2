"""Integrated Gradients for a batch, with per-image base-points and targets, in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tig_batch.backends import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    Classifier,
    call_logits,
    call_logits_and_grad,
    explained_value,
)
from tig_batch.engine._projection import IGProjection
from tig_batch.engine._quadrature import Quadrature, quadrature
from tig_batch.kernels.dispatch import ig_accumulate_project, interpolate_path

Target = int | torch.Tensor | None


@dataclass(frozen=True)
class Attribution:
    """An explanation per image, shaped like the inputs.

    ``delta`` (the convergence delta ``sum_i IG_i - (f_c(x) - f_c(a))``) and ``output_gap``
    (``f_c(x) - f_c(a)``) are set for IG methods and ``None`` for gradient explainers.
    """

    attributions: torch.Tensor
    target: torch.Tensor
    delta: torch.Tensor | None = None
    output_gap: torch.Tensor | None = None


def resolve_target(model: Classifier, inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """Per-image classes (B,): the given class(es), or the predicted class when ``None``."""
    batch = inputs.shape[0]
    if target is None:
        return call_logits(model, inputs).argmax(1)
    target = torch.as_tensor(target, device=inputs.device)
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.dim() == 0:
        return target.long().expand(batch).clone()
    if target.shape != (batch,):
        raise ValueError(
            f"target must be an int or have shape ({batch},), got {tuple(target.shape)}"
        )
    return target.long()


def explained_outputs(
    model: Classifier, inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``f_c`` (B,) for each image and its target, by one forward pass."""
    return explained_value(call_logits(model, inputs), target, model.output)


def reference_gaps(
    model: Classifier,
    inputs: torch.Tensor,
    target: torch.Tensor,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """``f_c(x) - f_c(zero base-point)`` (B,): the output change IG from the zero base-point
    explains, the unit in which the search's ``min_gap`` and the reports' gap fractions are
    measured."""
    zero = torch.zeros_like(inputs).clamp_(*value_range)
    return explained_outputs(model, inputs, target) - explained_outputs(model, zero, target)


def path_gradients(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    nodes: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """``grad f_c`` at every path point, (B*K, ...) image-major, in model calls of bounded size."""
    path = interpolate_path(inputs, baselines, nodes)
    return input_gradients(
        model, path, target.repeat_interleave(nodes.numel()), internal_batch_size
    )


def input_gradients(
    model: Classifier, inputs: torch.Tensor, target: torch.Tensor, internal_batch_size: int
) -> torch.Tensor:
    """``grad f_c`` for each input, ``internal_batch_size`` inputs per model call."""
    grads = torch.empty_like(inputs)
    for start in range(0, inputs.shape[0], internal_batch_size):
        chunk = slice(start, start + internal_batch_size)
        grads[chunk] = call_logits_and_grad(model, inputs[chunk], target[chunk])[1]
    return grads


def image_groups(batch: int, per_image: int, internal_batch_size: int) -> list[slice]:
    """Rows of consecutive images whose ``per_image`` samples each fit together in
    ``internal_batch_size`` (at least one image per group), for bounded model calls."""
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    group = max(1, internal_batch_size // per_image)
    return [slice(start, start + group) for start in range(0, batch, group)]


def forward_outputs(
    model: Classifier, inputs: torch.Tensor, target: torch.Tensor, internal_batch_size: int
) -> torch.Tensor:
    """``f_c`` (N,) for each input by forward passes only, ``internal_batch_size`` per call."""
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    outputs = [
        explained_outputs(
            model,
            inputs[start : start + internal_batch_size],
            target[start : start + internal_batch_size],
        )
        for start in range(0, inputs.shape[0], internal_batch_size)
    ]
    return torch.cat(outputs)


def integrate(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    rule: Quadrature,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    basis: torch.Tensor | None = None,
) -> IGProjection:
    """The IG quadrature (and, given a tangent ``basis``, its projection) for a batch.

    Images go through in groups of ``internal_batch_size // K`` (at least one), so the model
    sees at most ``internal_batch_size`` samples per call and the path and gradient buffers
    hold at most ``max(internal_batch_size, K)`` samples, whatever the batch size.
    """
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    rule = rule.to(inputs.device, inputs.dtype)
    group = max(1, internal_batch_size // len(rule))
    parts = []
    for start in range(0, inputs.shape[0], group):
        rows = slice(start, start + group)
        grads = path_gradients(
            model, inputs[rows], baselines[rows], target[rows], rule.nodes, internal_batch_size
        )
        part_basis = None if basis is None else basis[rows]
        parts.append(
            ig_accumulate_project(grads, rule.weights, inputs[rows], baselines[rows], part_basis)
        )
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _concatenate(parts: list[IGProjection]) -> IGProjection:
    """Stack per-group results along the batch."""
    fields = {}
    for name in IGProjection.__dataclass_fields__:
        values = [getattr(part, name) for part in parts]
        fields[name] = None if values[0] is None else torch.cat(values)
    return IGProjection(**fields)


def integrated_gradients(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor | float = 0.0,
    target: Target = None,
    n_steps: int = 50,
    method: str = "midpoint",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """IG of ``f_c`` along the straight path from each base-point to its image.

    ``IG(x; a) = (x - a) * sum_k w_k grad f_c(a + t_k (x - a))`` with the ``n_steps``-node rule
    ``method`` (``left``, ``right``, ``midpoint``, ``trapezoid``, ``gauss-legendre``).
    ``baselines`` is a scalar, one image, or one base-point per image (used as given: clip
    them first if they must lie in the value range). ``target`` defaults to the predicted
    class. At most ``internal_batch_size`` samples (images x nodes) go through the model at
    once. Computed in the inputs' dtype.
    """
    baselines = torch.as_tensor(baselines, dtype=inputs.dtype, device=inputs.device)
    baselines = baselines.expand_as(inputs)
    target = resolve_target(model, inputs, target)
    result = integrate(
        model, inputs, baselines, target, quadrature(method, n_steps), internal_batch_size
    )
    gap = explained_outputs(model, inputs, target) - explained_outputs(model, baselines, target)
    return Attribution(
        attributions=result.attributions.view_as(inputs).to(inputs.dtype),
        target=target,
        delta=result.attribution_sum - gap,
        output_gap=gap,
    )
