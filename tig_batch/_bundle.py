"""The model bundle on disk: ONNX graphs plus a manifest that pins every file by its sha256.

Written by ``tig_batch.export``, read by the ONNX backend. A bundle that fails its checksums or
has another format version is refused before any graph is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tig_batch.backends._base import ExplainedOutput
from tig_batch.errors import ModelError

FORMAT = "tig-batch-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLASSIFIER = "classifier.onnx"
CLASSIFIER_FORWARD = (
    "classifier_forward.onnx"  # optional: bundles before it run logits on CLASSIFIER
)
ENCODER = "encoder.onnx"
DECODER_JVP = "decoder_jvp.onnx"


@dataclass(frozen=True)
class InputSpec:
    """What the classifier takes: one image's shape, its value range, and any normalisation.

    ``normalization`` (per-channel ``mean`` and ``std``) is applied *inside* the exported graphs,
    so callers always pass images in ``value_range``; it is recorded for reference.
    """

    shape: tuple[int, int, int]
    value_range: tuple[float, float] = (0.0, 1.0)
    normalization: dict[str, list[float]] | None = None

    @property
    def dim(self) -> int:
        channels, height, width = self.shape
        return channels * height * width


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: everything needed to use, check and trace back a bundle."""

    input: InputSpec
    class_names: tuple[str, ...]
    explained_output: ExplainedOutput
    latent_dim: int
    opset: int
    files: dict[str, str]  # file name -> sha256
    versions: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    torch_models: dict[str, Any] = field(default_factory=dict)  # how the torch backend rebuilds
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        spec = data["input"]
        return cls(
            input=InputSpec(
                tuple(spec["shape"]), tuple(spec["value_range"]), spec.get("normalization")
            ),
            class_names=tuple(data["class_names"]),
            explained_output=data["explained_output"],
            latent_dim=int(data["latent_dim"]),
            opset=int(data["opset"]),
            files=dict(data["files"]),
            versions=dict(data.get("versions", {})),
            verification=dict(data.get("verification", {})),
            torch_models=dict(data.get("torch_models", {})),
            format=data["format"],
            format_version=int(data["format_version"]),
        )


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | str) -> Manifest:
    """Read and check a bundle's manifest: format, version, and every file's sha256."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelError(
            f"{directory}: not a tig-batch bundle (no {MANIFEST}); run `tig-batch export`"
        )
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{path}: unreadable manifest ({error})") from None
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: format {manifest.format!r} version {manifest.format_version}; this "
            f"tig-batch reads {FORMAT!r} version {FORMAT_VERSION}. Export the bundle again."
        )
    for name in (CLASSIFIER, ENCODER, DECODER_JVP):
        if name not in manifest.files:
            raise ModelError(f"{path}: the manifest lists no {name}")
    for name, expected in manifest.files.items():
        file = directory / name
        if not file.is_file():
            raise ModelError(f"{file}: missing from the bundle")
        if sha256(file) != expected:
            raise ModelError(
                f"{file}: sha256 does not match the manifest; the bundle was modified or "
                "corrupted. Export it again."
            )
    return manifest


def manifest_digest(directory: Path | str) -> str:
    """sha256 of ``manifest.json``, which pins the whole bundle (outputs record it)."""
    return sha256(Path(directory) / MANIFEST)
