"""What the Triton wrappers share: the lazy import, launch checks and block-size choices.

Importing this module imports neither Triton nor anything else heavy: the op modules build
their kernels on the first launch (:func:`lazy_kernels`), so CPU-only users never pay for
Triton and a machine without it or without a GPU can still import every op module.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

K = TypeVar("K")

#: Dtypes the kernels read; all arithmetic is float32 (float64 for float64 inputs).
SUPPORTED_DTYPES = (torch.float16, torch.float32, torch.float64)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def lazy_kernels(build: Callable[[], K]) -> Callable[[], K]:
    """Call ``build`` (which imports Triton and jit-compiles kernels) once per interpreter mode.

    ``triton.jit`` decides at decoration time whether a kernel is interpreted, so kernels
    are decorated on first use, under the ``TRITON_INTERPRET`` setting then in force.
    """
    built: dict[bool, K] = {}

    @functools.wraps(build)
    def get() -> K:
        mode = interpreting()
        if mode not in built:
            built[mode] = build()
        return built[mode]

    return get


def check_launch(op: str, **tensors: torch.Tensor | None) -> torch.device:
    """Raise unless the named tensors can go to one Triton launch; return their device."""
    present = {name: t for name, t in tensors.items() if t is not None}
    for name, t in present.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{op}: {name} has dtype {t.dtype}; the Triton kernel reads float16, float32 "
                "or float64 (use the torch twin, TIG_BATCH_KERNELS=torch, for other dtypes)"
            )
    devices = {t.device for t in present.values()}
    if len(devices) != 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {where}")
    device = devices.pop()
    if device.type == "cpu" and not interpreting():
        raise RuntimeError(
            f"{op}: the Triton kernel needs CUDA tensors; got CPU tensors. Use the torch twin "
            "(TIG_BATCH_KERNELS=torch or auto), or set TRITON_INTERPRET=1 to run the kernel in "
            "Triton's (slow) CPU interpreter"
        )
    if device.type not in ("cuda", "cpu"):
        raise RuntimeError(f"{op}: the Triton kernel runs on CUDA devices, got {device}")
    return device


def accumulator(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32: the dtype every kernel computes in."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def tl_dtype(dtype: torch.dtype) -> Any:
    """The ``triton.language`` dtype of a torch floating dtype."""
    import triton.language as tl

    return {torch.float16: tl.float16, torch.float32: tl.float32, torch.float64: tl.float64}[dtype]


def rows(t: torch.Tensor, n_rows: int, n_elements: int) -> torch.Tensor:
    """``t`` viewed as (n_rows, n_elements) with unit stride along a row (copied if it must)."""
    t = t.reshape(n_rows, n_elements)
    return t if t.stride(1) == 1 or n_elements == 1 else t.contiguous()


def reduction_block(n_elements: int) -> int:
    """Elements of ``d`` per program in the kernels that reduce over ``d`` in two stages.

    Chosen on the host, not autotuned, because it fixes the number of per-block partial sums
    the next stage reads. The interpreter gets tiny blocks so tests cross block boundaries.
    """
    if interpreting():
        return 32
    return max(16, min(256, triton_next_power_of_2(n_elements)))


def triton_next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def triton_cdiv(n: int, block: int) -> int:
    return -(-n // block)
