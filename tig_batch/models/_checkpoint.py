"""Checkpoints: weights as a torch state dict, metadata and metrics as JSON beside them.

``<name>.pt`` holds only tensors and is read with ``torch.load(weights_only=True)``, so a
checkpoint can never run code; ``<name>.json`` says how to rebuild the model (architecture
and arguments), what it expects as input, what it was trained on and how well it did;
``<name>.metrics.json`` repeats the metrics for scripts.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tig_batch import __version__
from tig_batch.data import DatasetInfo, DatasetSummary
from tig_batch.errors import ModelError
from tig_batch.models._arch import build

CHECKPOINT_FORMAT = "tig-batch-checkpoint"
CHECKPOINT_VERSION = 1


def _versions() -> dict:
    import h5py
    import numpy

    return {
        "tig_batch": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
    }


def build_metadata(
    kind: str,
    architecture: str,
    args: dict,
    train: DatasetInfo,
    summary: DatasetSummary,
    test: DatasetInfo | None,
    config: dict,
    metrics: dict,
    normalization: dict | None,
) -> dict:
    """The JSON metadata of a trained tig-batch model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "kind": kind,
        "architecture": {"name": architecture, "args": args},
        "input": {
            "shape": list(train.shape),
            "value_range": list(train.value_range),
            "channel_layout": train.channel_layout,
            "normalization": normalization,
        },
        "class_names": list(train.class_names),
        "metrics": metrics,
        "training": {
            "config": config,
            "train_data": {
                "path": str(train.path),
                "source": train.source,
                "count": train.count,
                "sha256": summary.sha256,
            },
            "test_data": None if test is None else {"path": str(test.path), "count": test.count},
        },
        "versions": _versions(),
    }


def checkpoint_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(weights ``.pt``, metadata ``.json``, metrics ``.metrics.json``) for a checkpoint name."""
    path = Path(path)
    if path.suffix in (".pt", ".json"):
        path = path.with_suffix("")
    return (
        path.with_name(path.name + ".pt"),
        path.with_name(path.name + ".json"),
        path.with_name(path.name + ".metrics.json"),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_writable(path: str | Path) -> None:
    """Fail before training, not after, when the checkpoint cannot be written."""
    weights = checkpoint_paths(path)[0]
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
        probe = weights.with_name(f".{weights.name}.{os.getpid()}.probe")
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ModelError(
            f"{weights.parent}: cannot write the checkpoint here ({exc.strerror or exc}); "
            "choose another --output"
        ) from None


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict) -> Path:
    """Write weights, metadata and metrics; return the weights path.

    Everything is written under temporary names first and renamed at the end, so an
    existing checkpoint of the same name is replaced whole or not at all.
    """
    weights, meta_path, metrics_path = checkpoint_paths(path)
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"{weights.parent}: cannot create ({exc.strerror or exc})") from None
    temps = [p.with_name(p.name + ".partial") for p in (weights, meta_path, metrics_path)]
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, temps[0])
        full = {**metadata, "weights": weights.name, "weights_sha256": _sha256(temps[0])}
        temps[1].write_text(json.dumps(full, indent=2) + "\n")
        temps[2].write_text(json.dumps(metadata.get("metrics", {}), indent=2) + "\n")
        for tmp, final in zip(temps, (weights, meta_path, metrics_path), strict=True):
            os.replace(tmp, final)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise ModelError(
            f"{weights.parent}: cannot write the checkpoint ({exc.strerror or exc})"
        ) from None
    return weights


def _load_state(weights: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{weights}: no such weights file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{weights}: not a loadable tensor state dict: {first}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{weights}: expected a state dict of tensors")
    return state


def _load_into(model: nn.Module, state: dict, weights: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ModelError(
            f"{weights}: weights do not fit the model: {' '.join(lines[:3])}"
        ) from None


def load_checkpoint(path: str | Path, kind: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a tig-batch model from its checkpoint (``.pt`` or ``.json`` path), in eval mode."""
    weights, meta_path, _ = checkpoint_paths(path)
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: checkpoint metadata is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable checkpoint metadata: {exc}") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{meta_path}: not tig-batch checkpoint metadata")
    if kind is not None and metadata.get("kind") != kind:
        raise ModelError(f"{meta_path}: holds a {metadata.get('kind')}, not a {kind}")
    expected = metadata.get("weights_sha256")
    if expected and weights.is_file() and _sha256(weights) != expected:
        raise ModelError(f"{weights}: weights do not match the sha256 in {meta_path.name}")
    arch = metadata.get("architecture") or {}
    model = build(str(arch.get("name")), dict(arch.get("args") or {}))
    _load_into(model, _load_state(weights), weights)
    return model.eval(), metadata


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """A classifier checkpoint written by ``tig-batch train classifier``."""
    return load_checkpoint(path, "classifier")


def load_autoencoder(path: str | Path) -> tuple[nn.Module, dict]:
    """An autoencoder checkpoint; the model has ``.encoder`` and ``.decoder``."""
    return load_checkpoint(path, "autoencoder")


def _import_factory(spec: str, option: str = "--model") -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"{option} {spec!r}: expected package.module:factory or file.py:factory")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise ModelError(f"{file}: no such Python file")
            mod_spec = importlib.util.spec_from_file_location(f"_tig_user_{file.stem}", file)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"{option} {spec!r}: cannot import {module_name!r} ({exc}); is it installed or on "
            "PYTHONPATH?"
        ) from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ModelError(f"{option} {spec!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ModelError(f"{option} {spec!r}: {attr!r} is not callable")
    return factory


def load_user_model(
    spec: str, weights: str | Path | None = None, option: str = "--model"
) -> nn.Module:
    """A user's own classifier: call ``factory()`` from ``package.module:factory``, load weights.

    The factory takes no arguments and returns an ``nn.Module`` that maps images in the
    dataset's value range to logits; ``weights`` is a state dict (read with
    ``weights_only=True``) or omitted when the factory loads its own. ``option`` names the
    spec in error messages.
    """
    model = _import_factory(spec, option)()
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{option} {spec!r}: factory returned {type(model).__name__}, not a Module"
        )
    if weights is not None:
        weights = Path(weights)
        _load_into(model, _load_state(weights), weights)
    return model.eval()


def load_user_autoencoder(spec: str, weights: str | Path | None = None) -> nn.Module:
    """A user's own autoencoder, as :func:`load_user_model`: a module with ``.encoder`` (images
    to codes) and ``.decoder`` (codes to images), as tig-batch's own autoencoders have."""
    model = load_user_model(spec, weights, "--autoencoder-model")
    missing = [part for part in ("encoder", "decoder") if not hasattr(model, part)]
    if missing:
        raise ModelError(
            f"--autoencoder-model {spec!r}: the model has no {' or '.join(missing)}; return a "
            "module with submodules .encoder (images to codes) and .decoder (codes to images)"
        )
    return model


def factory_file(spec: str) -> Path | None:
    """The Python file a ``file.py:factory`` spec names (None for ``package.module:factory``)."""
    module_name = spec.partition(":")[0]
    return Path(module_name) if module_name.endswith(".py") else None
