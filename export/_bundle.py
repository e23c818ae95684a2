"""Write a model bundle: trace, export, verify against torch autograd, then publish atomically."""

from __future__ import annotations

import copy
import importlib.metadata
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tig_batch._bundle import (
    CLASSIFIER,
    CLASSIFIER_FORWARD,
    DECODER_JVP,
    ENCODER,
    MANIFEST,
    InputSpec,
    Manifest,
    read_manifest,
    sha256,
)
from tig_batch.backends import ExplainedOutput
from tig_batch.errors import ModelError
from tig_batch.export._trace import OPSET, fold_batch_norm, gradient_graph, jvp_graph, save_onnx
from tig_batch.export._verify import DEFAULT_TOLERANCE, verify_export


def export_bundle(
    classifier: nn.Module,
    encoder: nn.Module,
    decoder: nn.Module,
    directory: Path | str,
    spec: InputSpec,
    class_names: Sequence[str],
    output: ExplainedOutput = "logit",
    verify_inputs: torch.Tensor | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    torch_files: dict[str, Path] | None = None,
    torch_models: dict[str, Any] | None = None,
) -> Manifest:
    """Export a classifier's gradient and forward graphs and an autoencoder's encoder and
    decoder-JVP graphs.

    Everything is traced, exported and verified in a temporary directory beside ``directory``;
    only a bundle whose ONNX Runtime results match torch autograd within ``tolerance`` (max
    error relative to the largest reference value) is renamed into place. ``verify_inputs``
    are real images to check on, in addition to random ones from the value range.
    ``torch_files`` (bundle-relative name to source file) are copied in and checksummed like
    the graphs; ``torch_models`` tells the torch backend how to rebuild the models from them.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise ModelError(f"{directory} exists; pass overwrite=True (--overwrite) to replace it")
    # float32 eval-mode copies: the caller's modules keep their dtype and mode
    classifier, encoder, decoder = (
        copy.deepcopy(m).float().eval() for m in (classifier, encoder, decoder)
    )
    example = torch.rand(2, *spec.shape) * (spec.value_range[1] - spec.value_range[0])
    example = example + spec.value_range[0]
    _check_shapes(classifier, encoder, decoder, example, len(class_names))
    with torch.no_grad():
        latent = encoder(example).flatten(1)
    staging = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        target = torch.zeros(2, dtype=torch.long)
        save_onnx(
            gradient_graph(classifier, output, example), (example, target),
            staging / CLASSIFIER, ["x", "target"], ["logits", "grad"],
        )  # fmt: skip
        save_onnx(
            fold_batch_norm(classifier), (example,), staging / CLASSIFIER_FORWARD, ["x"], ["logits"]
        )
        save_onnx(nn.Sequential(encoder, nn.Flatten()), (example,), staging / ENCODER, ["x"], ["z"])
        save_onnx(
            jvp_graph(decoder, latent), (latent, torch.ones_like(latent)),
            staging / DECODER_JVP, ["z", "dz"], ["decoded", "jvp"],
        )  # fmt: skip
        report = verify_export(
            staging, (classifier, encoder, decoder), spec, len(class_names), output,
            verify_inputs, tolerance, latent.shape[1],
        )  # fmt: skip
        for name, source in (torch_files or {}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / name)
        files = [CLASSIFIER, CLASSIFIER_FORWARD, ENCODER, DECODER_JVP, *(torch_files or {})]
        manifest = Manifest(
            input=spec,
            class_names=tuple(class_names),
            explained_output=output,
            latent_dim=int(latent.shape[1]),
            opset=OPSET,
            files={name: sha256(staging / name) for name in files},
            versions=_versions(),
            verification=report,
            torch_models=torch_models or {},
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        read_manifest(staging)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _check_shapes(
    classifier: nn.Module,
    encoder: nn.Module,
    decoder: nn.Module,
    example: torch.Tensor,
    n_classes: int,
) -> None:
    """Refuse models that do not fit the input spec or each other, before tracing anything."""
    shape = tuple(example.shape[1:])
    try:
        with torch.no_grad():
            logits = classifier(example)
            decoded = decoder(encoder(example).flatten(1))
    except RuntimeError as error:
        raise ModelError(f"the models do not accept images of shape {shape}: {error}") from None
    if logits.shape != (len(example), n_classes):
        raise ModelError(
            f"the classifier gives logits of shape {tuple(logits.shape[1:])} for {n_classes} "
            "class names"
        )
    if tuple(decoded.shape[1:]) != shape:
        raise ModelError(
            f"the decoder reconstructs shape {tuple(decoded.shape[1:])}, not the input "
            f"shape {shape}"
        )


def _versions() -> dict[str, str]:
    names = ("tig-batch", "torch", "onnx", "onnxscript", "onnxruntime")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
