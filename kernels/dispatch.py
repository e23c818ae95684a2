"""Choose, per call, between a fused Triton kernel and its torch twin.

``auto`` (the default) takes Triton when every tensor of the call lives on a CUDA device and
Triton imports, and the torch twin otherwise, so CPU runs never touch Triton. The environment
variable ``TIG_BATCH_KERNELS`` (``auto``, ``triton`` or ``torch``) or :func:`use_kernels`
forces either; forcing ``triton`` on CPU tensors needs ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Literal

import torch

from tig_batch.engine._projection import IGProjection
from tig_batch.kernels.ig_accumulate_project import ig_accumulate_project_ref
from tig_batch.kernels.interpolate_path import interpolate_path_ref
from tig_batch.kernels.tangential_step import tangential_step_ref

KernelChoice = Literal["auto", "triton", "torch"]
ENV_VAR = "TIG_BATCH_KERNELS"
_forced: KernelChoice | None = None


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported here (checked once)."""
    return importlib.util.find_spec("triton") is not None


def kernel_choice() -> KernelChoice:
    """The setting in force: :func:`use_kernels`, else ``$TIG_BATCH_KERNELS``, else ``auto``."""
    choice = _forced or os.environ.get(ENV_VAR, "auto")
    if choice not in ("auto", "triton", "torch"):
        raise ValueError(f"{ENV_VAR} must be auto, triton or torch, got {choice!r}")
    return choice  # type: ignore[return-value]


@contextlib.contextmanager
def use_kernels(choice: KernelChoice) -> Iterator[None]:
    """Force ``triton`` or ``torch`` kernels (or ``auto``) inside a ``with`` block."""
    global _forced
    if choice not in ("auto", "triton", "torch"):
        raise ValueError(f"kernels must be auto, triton or torch, got {choice!r}")
    previous, _forced = _forced, choice
    try:
        yield
    finally:
        _forced = previous


def wants_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether this call goes to Triton under the current setting.

    Never when autograd records through one of the tensors: the kernels have no backward,
    and the exact base-point search differentiates through the path.
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    choice = kernel_choice()
    if choice == "torch":
        return False
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"{ENV_VAR}=triton but Triton is not installed")
        return True
    on_gpu = all(t.is_cuda for t in tensors if t is not None)
    return on_gpu and triton_available()


def interpolate_path(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    nodes: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Path batch (B*K, ...) with row ``b*K + k`` equal to ``a_b + t_k (x_b - a_b)``."""
    if wants_triton(inputs, baselines, nodes, out):
        from tig_batch.kernels.interpolate_path import interpolate_path_triton

        return interpolate_path_triton(inputs, baselines, nodes, out)
    return interpolate_path_ref(inputs, baselines, nodes, out)


def ig_accumulate_project(
    grads: torch.Tensor,
    weights: torch.Tensor,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    basis: torch.Tensor | None = None,
) -> IGProjection:
    """Mean path gradient, attribution, its sum and norm, ``U^T v`` and ``mu``, in one pass."""
    if wants_triton(grads, weights, inputs, baselines, basis):
        from tig_batch.kernels.ig_accumulate_project import ig_accumulate_project_triton

        return ig_accumulate_project_triton(grads, weights, inputs, baselines, basis)
    return ig_accumulate_project_ref(grads, weights, inputs, baselines, basis)


def tangential_step(
    attributions: torch.Tensor,
    mean_gradient: torch.Tensor,
    basis: torch.Tensor,
    projection: torch.Tensor,
    baselines: torch.Tensor,
    lr: torch.Tensor | float,
    value_range: tuple[float, float],
    normalize: bool = True,
) -> torch.Tensor:
    """The frozen-path ascent step on ``mu``: the new base-points (B, d), clipped."""
    args = (attributions, mean_gradient, basis, projection, baselines, lr, value_range, normalize)
    if wants_triton(attributions, mean_gradient, basis, projection, baselines):
        from tig_batch.kernels.tangential_step import tangential_step_triton

        return tangential_step_triton(*args)
    return tangential_step_ref(*args)
