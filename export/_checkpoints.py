"""A bundle from checkpoints on disk: what ``tig-batch export`` and ``quickstart`` share.

Loads a classifier and an autoencoder, each a tig-batch checkpoint or a user's own
``module:factory`` plus weights, and exports them with :func:`export_bundle`, copying the torch
files (and a factory's Python file) into the bundle together with the recipe the torch backend
rebuilds the models from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tig_batch._bundle import InputSpec, Manifest
from tig_batch.backends import ExplainedOutput
from tig_batch.errors import ModelError
from tig_batch.export._bundle import export_bundle
from tig_batch.export._verify import DEFAULT_TOLERANCE

VERIFY_IMAGES = 7


def verify_images(data: str | Path | None, autoencoder_metadata: dict) -> torch.Tensor | None:
    """Up to 7 real images: from ``data``, else the autoencoder's training data if still there."""
    from tig_batch.data import iter_batches, resolve_dataset

    train_data = autoencoder_metadata.get("training", {}).get("train_data") or {}
    source = data or train_data.get("path")
    if source is None or (data is None and not Path(source).exists()):
        return None
    batch = next(iter_batches(resolve_dataset(source, "test"), VERIFY_IMAGES, labels=False))
    return torch.from_numpy(batch.images)


@dataclass(frozen=True)
class _Source:
    """A model to export, the files the bundle keeps for it, and how torch rebuilds it."""

    module: nn.Module
    metadata: dict | None  # a tig-batch checkpoint's; None for a user's own model
    files: dict[str, Path]  # name in the bundle -> file to copy
    recipe: dict[str, Any]


def _from_checkpoint(kind: str, checkpoint: Path | str) -> _Source:
    from tig_batch.models import checkpoint_paths, load_checkpoint

    module, metadata = load_checkpoint(checkpoint, kind)
    weights, meta, _ = checkpoint_paths(checkpoint)
    files = {f"torch/{kind}.pt": weights, f"torch/{kind}.json": meta}
    return _Source(module, metadata, files, {"checkpoint": f"torch/{kind}.json"})


def _from_factory(kind: str, spec: str, weights: Path | str | None) -> _Source:
    """A user's ``module:factory``; a ``file.py`` is copied in, so the bundle works anywhere."""
    from tig_batch.models import factory_file, load_user_autoencoder, load_user_model

    load = load_user_autoencoder if kind == "autoencoder" else load_user_model
    module = load(spec, weights)
    files: dict[str, Path] = {}
    factory, source = spec, factory_file(spec)
    if source is not None:
        name = f"torch/{kind}/{source.name}"
        files[name], factory = source, f"{name}:{spec.partition(':')[2]}"
    if weights is not None:
        files[f"torch/{kind}.pt"] = Path(weights)
    recipe = {"factory": factory, "weights": f"torch/{kind}.pt" if weights else None}
    return _Source(module, None, files, recipe)


def _source(kind: str, checkpoint: Path | str | None, spec: str | None, weights: Any) -> _Source:
    if (checkpoint is None) == (spec is None):
        raise ModelError(f"give exactly one of a checkpoint or a module:factory for the {kind}")
    if weights is not None and spec is None:
        raise ModelError(f"{kind} weights go with a module:factory (a checkpoint holds its own)")
    if spec is None:
        return _from_checkpoint(kind, checkpoint)  # type: ignore[arg-type]
    return _from_factory(kind, spec, weights)


def _input(
    classifier: _Source, autoencoder: _Source, data: str | Path | None
) -> tuple[InputSpec, list[str]]:
    """The input spec and class names: from a tig-batch checkpoint, else from ``data``."""
    from tig_batch.data import resolve_dataset

    if classifier.metadata or autoencoder.metadata:
        meta = classifier.metadata or autoencoder.metadata or {}
        normalization = (classifier.metadata or {}).get("input", {}).get("normalization")
        spec = InputSpec(
            tuple(meta["input"]["shape"]), tuple(meta["input"]["value_range"]), normalization
        )
        return spec, list(meta["class_names"])
    if data is None:
        raise ModelError(
            "with your own classifier and autoencoder, name a dataset of the images they take "
            "(--verify-data): its shape, value range and class names go into the bundle"
        )
    info = resolve_dataset(data, "test")
    names = list(info.class_names)
    if not names:
        with torch.no_grad():
            n_classes = classifier.module(torch.zeros(1, *info.shape)).shape[-1]
        names = [str(i) for i in range(n_classes)]
    return InputSpec(tuple(info.shape), tuple(info.value_range)), names


def export_checkpoints(
    autoencoder: Path | str | None,
    directory: Path | str,
    *,
    checkpoint: Path | str | None = None,
    model_spec: str | None = None,
    weights: Path | str | None = None,
    autoencoder_spec: str | None = None,
    autoencoder_weights: Path | str | None = None,
    output: ExplainedOutput = "logit",
    verify_data: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
) -> Manifest:
    """Export a classifier and an autoencoder, each a tig-batch checkpoint or a user's own.

    Exactly one of ``checkpoint`` and ``model_spec`` (+ ``weights``) names the classifier, and
    one of ``autoencoder`` and ``autoencoder_spec`` (+ ``autoencoder_weights``) the
    autoencoder, whose module has ``.encoder`` and ``.decoder``. The bundle holds the ONNX
    graphs, copies of the torch files (weights, metadata, a ``file.py`` factory's source) and
    the recipe for ``load_bundle(..., Runtime("torch"))``. Without a tig-batch checkpoint, the input
    spec and class names come from ``verify_data``.
    """
    classifier = _source("classifier", checkpoint, model_spec, weights)
    ae = _source("autoencoder", autoencoder, autoencoder_spec, autoencoder_weights)
    spec, class_names = _input(classifier, ae, verify_data)
    recipe = {"classifier": classifier.recipe, "autoencoder": ae.recipe}
    return export_bundle(
        classifier.module, ae.module.encoder, ae.module.decoder, directory, spec, class_names,
        output, verify_images(verify_data, ae.metadata or {}), tolerance, overwrite,
        classifier.files | ae.files, recipe,
    )  # fmt: skip
