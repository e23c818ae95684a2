"""Export verification: ONNX Runtime against torch autograd, on images where the gradient is
unique.

A max-pool window whose two largest inputs are equal, or closer than float32 rounding, is a
kink of the classifier: every input there has several valid gradients (one per maximum), and
two correct float32 implementations that sum in different orders (torch's convolution, and
ONNX Runtime's fused convolution and pooling) can each pick another one. Such ties are
common, not rare: a constant region of an image (an MNIST background) gives its windows equal
values up to rounding, and an untrained model keeps them. So the gradient is compared only on
images with no window that close to a tie; there it is unique, and any difference beyond the
tolerance is an export error. Logits, codes and decoder Jacobians are continuous at ties and
are compared on every image.

How close is too close is measured, not guessed: the same model in float64 gives each pool
input's float32 rounding error, and a window counts as tied when its float64 top-two gap is
below :data:`TIE_FACTOR` times the largest such error in its layer (for that image). Windows
whose two largest inputs are exactly equal in both precisions (a dead channel's constant,
ReLU's zeros) are computed exactly by any implementation, which then takes the first maximum
as torch does, and do not count.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from tig_batch._bundle import CLASSIFIER, CLASSIFIER_FORWARD, DECODER_JVP, ENCODER, InputSpec
from tig_batch.backends import (
    ExplainedOutput,
    OnnxClassifier,
    OnnxManifold,
    Runtime,
    TorchClassifier,
    TorchManifold,
)
from tig_batch.errors import ModelError

DEFAULT_TOLERANCE = 1e-4
VERIFY_BATCH_SIZES = (1, 7)
# A window is tied below this many times its layer's float32 rounding error: torch's value and
# ONNX Runtime's each lie about one rounding error from the exact one, and another summation
# order (strided convolutions, folded batch norm) may double that.
TIE_FACTOR = 8.0


def _windows(pool: nn.MaxPool2d, inputs: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Every window of ``pool`` over ``inputs``: (N, C, windows, values per window)."""
    kernel, dilation, padding = _pair(pool.kernel_size), _pair(pool.dilation), _pair(pool.padding)
    stride = _pair(pool.stride or pool.kernel_size)
    extra = [
        (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p)  # ceil_mode's windows past the edge
        for out, s, d, k, size, p in zip(
            pooled.shape[-2:], stride, dilation, kernel, inputs.shape[-2:], padding, strict=True
        )
    ]
    padded = F.pad(
        inputs,
        (padding[1], padding[1] + max(extra[1], 0), padding[0], padding[0] + max(extra[0], 0)),
        value=-torch.inf,
    )
    columns = F.unfold(padded.flatten(0, 1)[:, None], kernel, dilation=dilation, stride=stride)
    n, c = inputs.shape[:2]
    return columns.view(n, c, columns.shape[1], columns.shape[2]).transpose(2, 3)


def _pool_windows(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The windows of every ``nn.MaxPool2d`` in ``model`` during one forward pass."""
    seen: list[torch.Tensor] = []

    def hook(pool: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        pooled = output[0] if isinstance(output, tuple) else output
        seen.append(_windows(pool, inputs[0], pooled))  # type: ignore[arg-type]

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, nn.MaxPool2d)
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def tied_images(model: nn.Module, images: torch.Tensor, factor: float = TIE_FACTOR) -> torch.Tensor:
    """Per image (bool), whether a max-pool window of ``model`` is at a tie (module docstring).

    ``model`` is the float32 reference; a float64 copy measures the rounding. A model that does
    not run in float64 (or has no ``nn.MaxPool2d``) has no detectable ties: all False.
    """
    none = torch.zeros(len(images), dtype=torch.bool)
    try:
        single = _pool_windows(model, images.float())
        double = _pool_windows(copy.deepcopy(model).double(), images.double())
    except (RuntimeError, TypeError):
        return none
    tied = none
    for low, high in zip(single, double, strict=True):
        finite = torch.isfinite(high)
        rounding = torch.where(finite, (low.double() - high).abs(), 0).flatten(1).amax(1)
        top_low, top_high = low.topk(2, dim=-1).values, high.topk(2, dim=-1).values
        gap_low = top_low[..., 0] - top_low[..., 1]
        gap_high = top_high[..., 0] - top_high[..., 1]
        exact = (gap_low == 0) & (gap_high == 0)
        near = (gap_high < factor * rounding.view(-1, 1, 1)) & ~exact
        tied = tied | near.flatten(1).any(1)
    return tied


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    if reference.numel() == 0:
        return 0.0
    scale = reference.abs().max().clamp_min(1e-12)
    return float((ours - reference).abs().max() / scale)


def _batches(
    spec: InputSpec, verify_inputs: torch.Tensor | None, generator: torch.Generator
) -> list[torch.Tensor]:
    lo, hi = spec.value_range
    batches = [
        lo + (hi - lo) * torch.rand(n, *spec.shape, generator=generator) for n in VERIFY_BATCH_SIZES
    ]
    if verify_inputs is not None:
        real = verify_inputs.float()
        batches += [real[:n] for n in VERIFY_BATCH_SIZES if len(real) >= n]
    return batches


def verify_export(
    staging: Path,
    models: tuple[nn.Module, nn.Module, nn.Module],
    spec: InputSpec,
    n_classes: int,
    output: ExplainedOutput,
    verify_inputs: torch.Tensor | None,
    tolerance: float,
    latent_dim: int,
) -> dict[str, object]:
    """ONNX Runtime against torch on random and real images at two batch sizes; the report.

    ``models`` are the float32 (classifier, encoder, decoder) the graphs in ``staging`` were
    traced from. Raises :class:`ModelError` when an error exceeds ``tolerance`` (relative to
    the largest reference value), or when every image is at a max-pool tie.
    """
    classifier, encoder, decoder = models
    settings = Runtime()
    onnx_classifier = OnnxClassifier(
        staging / CLASSIFIER, output, n_classes, settings, staging / CLASSIFIER_FORWARD
    )
    onnx_manifold = OnnxManifold(staging / ENCODER, staging / DECODER_JVP, latent_dim, settings)
    torch_classifier = TorchClassifier(classifier, output)
    torch_manifold = TorchManifold(encoder, decoder)
    generator = torch.Generator().manual_seed(0)
    errors = dict.fromkeys(("logits", "forward_logits", "grad", "encoder", "decoder_jacobian"), 0.0)
    compared = at_ties = 0
    for images in _batches(spec, verify_inputs, generator):
        target = torch.randint(0, n_classes, (len(images),), generator=generator)
        logits, grad = onnx_classifier.logits_and_grad(images, target)
        ref_logits, ref_grad = torch_classifier.logits_and_grad(images, target)
        unique = ~tied_images(classifier, images)
        compared, at_ties = compared + int(unique.sum()), at_ties + int((~unique).sum())
        ref_codes = torch_manifold.encode(images)
        measured = {
            "logits": _relative_error(logits, ref_logits),
            "forward_logits": _relative_error(onnx_classifier.logits(images), ref_logits),
            "grad": _relative_error(grad[unique], ref_grad[unique]),
            "encoder": _relative_error(onnx_manifold.encode(images), ref_codes),
            "decoder_jacobian": _relative_error(
                onnx_manifold.decoder_jacobian(ref_codes),
                torch_manifold.decoder_jacobian(ref_codes),
            ),
        }
        errors = {key: max(errors[key], measured[key]) for key in errors}
    if compared == 0:
        raise ModelError(
            "export verification failed: every verification image has a max-pool window at a "
            "tie, where the gradient is not unique; pass other images (--verify-data)"
        )
    worst = max(errors, key=errors.__getitem__)
    if errors[worst] > tolerance:
        raise ModelError(
            f"export verification failed: ONNX Runtime {worst} differs from torch by "
            f"{errors[worst]:.2e} (relative), above the tolerance {tolerance:.0e}"
        )
    n_real = 0 if verify_inputs is None else min(len(verify_inputs), max(VERIFY_BATCH_SIZES))
    return {
        "max_relative_error": errors,
        "tolerance": tolerance,
        "batch_sizes": list(VERIFY_BATCH_SIZES),
        "real_images": n_real,
        "gradient_images": compared,
        "gradient_images_at_ties": at_ties,
        "passed": True,
    }
