"""How a run computes: which backend, on which device, with how many threads, in what sizes.

:class:`Runtime` is the one place these are declared. Nothing in it changes what an
explanation is (that is :class:`~tig_batch.pipeline.ExplainConfig`), only how it is computed,
so outputs record it for provenance but a resumed run may change it, except ``backend``,
whose two implementations compute the gradients differently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

import torch

BackendName = Literal["onnx", "torch"]
Optimization = Literal["disable", "basic", "extended", "all"]

DEFAULT_INTERNAL_BATCH_SIZE = 256
"""Samples per model call unless asked otherwise (images x quadrature nodes, or decoder
Jacobian rows): large enough to keep a CPU's cores busy, small enough that a call's
activations stay in its caches (docs/performance.md has the measurements)."""


@dataclass(frozen=True)
class Runtime:
    """Where and how the models run.

    - ``backend``: ``onnx`` runs the bundle's exported graphs in ONNX Runtime; ``torch``
      rebuilds the PyTorch models from the checkpoints the bundle carries (the reference,
      and the only one with second derivatives).
    - ``device``: ``cpu`` or ``cuda[:N]`` (the Triton kernels and the ONNX CUDA provider).
    - ``threads``: intra-op threads of torch and ONNX Runtime (None: their defaults).
    - ``graph_optimization``: ONNX Runtime's graph optimisation level.
    - ``internal_batch_size``: at most this many samples (images x nodes) per model call, so
      memory stays bounded whatever the quadrature's size.
    - ``spin_wait``: whether ONNX Runtime's idle worker threads spin-wait for work. Off by
      default: the engine runs torch between ONNX Runtime calls, and spinning workers hold the
      cores torch needs.
    """

    backend: BackendName = "onnx"
    device: str = "cpu"
    threads: int | None = None
    graph_optimization: Optimization = "all"
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE
    spin_wait: bool = False

    def __post_init__(self) -> None:
        if self.backend not in get_args(BackendName):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {self.backend!r}")
        if self.graph_optimization not in get_args(Optimization):
            raise ValueError(
                f"graph_optimization must be one of {', '.join(get_args(Optimization))}, got "
                f"{self.graph_optimization!r}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None), got {self.threads}")
        if self.internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {self.internal_batch_size}")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")

    @contextlib.contextmanager
    def torch_threads(self) -> Iterator[None]:
        """Inside the block torch uses ``threads`` (when given); restored on leaving."""
        if self.threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
