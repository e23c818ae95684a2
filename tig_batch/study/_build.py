"""Train or reuse the models, export or reuse their bundle, cut the test subset: the steps the
quickstart, the paper study and the GPU check share.

Each step is cached on disk: a checkpoint is reused when it loads, a bundle when its checksums
hold and it was exported from exactly these checkpoints, a subset when its file is there.
What determines the trained models is one :class:`Training`; its :meth:`Training.key` names
their cache directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tig_batch.data import DatasetInfo, Records, ShardSpec, iter_batches, open_dataset, write_shards
from tig_batch.errors import DataError, ModelError

Say = Callable[[str], None]


def _quiet(text: str) -> None:
    """A ``Say`` that says nothing."""


@dataclass(frozen=True)
class Training:
    """What determines the demo models: epochs per model (``max_steps`` caps each training;
    None trains every epoch), the autoencoder's latent size and the training seed."""

    classifier_epochs: int = 10
    autoencoder_epochs: int = 20
    max_steps: int | None = None
    latent_dim: int = 16
    seed: int = 0

    def key(self) -> str:
        """A short hash of every field: the name of the models' cache directory."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def epochs(self, kind: str) -> int:
        return self.classifier_epochs if kind == "classifier" else self.autoencoder_epochs

    def describe(self, kind: str) -> str:
        """``10 epochs``, ``1 epoch, at most 20 steps``: what training ``kind`` takes."""
        epochs = self.epochs(kind)
        limit = f", at most {self.max_steps} steps" if self.max_steps else ""
        return f"{epochs} epoch{'s' if epochs != 1 else ''}{limit}"


def ensure_checkpoint(
    kind: str,
    path: Path,
    train: DatasetInfo,
    test: DatasetInfo,
    training: Training,
    *,
    threads: int | None = None,
    say: Say = _quiet,
    progress: bool = False,
    log: Say | None = None,
    cached_only: bool = False,
) -> tuple[dict, bool]:
    """The test metrics of the ``kind`` checkpoint at ``path`` and whether it was reused:
    trained first (``progress`` bars, ``log`` lines) unless a usable one is there.
    ``say`` hears ``reusing ...`` or ``training (...)``; with ``cached_only`` a missing
    checkpoint is a :class:`ModelError` instead."""
    from tig_batch.models import TrainConfig, save_checkpoint, train_autoencoder, train_classifier

    cached = _cached_metrics(path, kind)
    if cached is not None:
        say(f"reusing {path}.pt")
        return cached, True
    if cached_only:
        raise ModelError(f"{path}.pt: not trained yet, and --cached-only trains nothing")
    say(f"training ({training.describe(kind)})")
    config = TrainConfig(
        epochs=training.epochs(kind), seed=training.seed, max_steps=training.max_steps,
        threads=threads,
    )  # fmt: skip
    if kind == "classifier":
        result = train_classifier(train, test, config, progress=progress, log=log)
    else:
        result = train_autoencoder(
            train, test, config, latent_dim=training.latent_dim, progress=progress, log=log
        )
    save_checkpoint(path, result.model, result.metadata)
    return result.metrics, False


def _cached_metrics(path: Path, kind: str) -> dict | None:
    """The metrics of a usable cached checkpoint, or None when it must be (re)trained."""
    from tig_batch.models import checkpoint_paths, load_checkpoint

    try:
        load_checkpoint(path, kind)
        metrics = checkpoint_paths(path)[2]
        return json.loads(metrics.read_text()) if metrics.is_file() else {}
    except (ModelError, DataError, OSError, ValueError):
        return None


def ensure_bundle(bundle: Path, checkpoints: dict[str, Path], say: Say = _quiet) -> bool:
    """Export the ``classifier`` and ``autoencoder`` checkpoints to the ONNX bundle
    ``bundle`` unless it is intact and was exported from exactly them; whether it was reused.
    ``say`` hears ``reusing ...`` or ``exporting ...``."""
    from tig_batch.export import export_checkpoints

    if _bundle_matches(bundle, checkpoints):
        say(f"reusing {bundle}")
        return True
    say(f"exporting to ONNX and verifying against torch in {bundle}")
    export_checkpoints(
        checkpoints["autoencoder"], bundle, checkpoint=checkpoints["classifier"], overwrite=True
    )
    return False


def _bundle_matches(bundle: Path, checkpoints: dict[str, Path]) -> bool:
    from tig_batch._bundle import read_manifest, sha256
    from tig_batch.models import checkpoint_paths

    try:
        files = read_manifest(bundle).files
        return all(
            files.get(f"torch/{kind}.pt") == sha256(checkpoint_paths(path)[0])
            for kind, path in checkpoints.items()
        )
    except (ModelError, DataError, OSError, ValueError):
        return False


def first_images(
    test: Path, n_images: int, path: Path, shard_size: int | None = None, name: str | None = None
) -> Path:
    """The first ``n_images`` of the dataset ``test`` written to ``path`` once (a shard file
    for a ``.h5`` path, else a directory of ``shard_size``-image shards) and reused after.

    Stored as the dataset stores them (uint8 pixels decode identically); ``name`` is what the
    shards' ``source`` calls ``test``.
    """
    if path.exists():
        return path
    info = open_dataset(test)
    batch = read_images(info, n_images)
    lo, hi = info.value_range
    if info.dtype == "uint8":
        stored = np.round((batch["images"] - lo) / (hi - lo) * 255).astype(np.uint8)
    else:
        stored = batch["images"]
    spec = ShardSpec(
        info.shape, info.dtype, info.value_range, info.channel_layout, info.class_names,
        split="test", source=f"first {len(stored)} images of {name or test}",
    )  # fmt: skip
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # renamed once whole
    records = Records(stored, batch["labels"], batch["ids"])
    write_shards([records], partial, spec, shard_size=shard_size or 10_000, overwrite=True)
    partial.replace(path)
    return path


def read_images(info: DatasetInfo, n_images: int) -> dict[str, np.ndarray]:
    """The first ``n_images`` images (decoded float32), labels (or None) and ids of a dataset."""
    parts: dict[str, list] = {"images": [], "labels": [], "ids": []}
    seen = 0
    for batch in iter_batches(info, 256):
        take = min(len(batch), n_images - seen)
        parts["images"].append(batch.images[:take])
        parts["labels"].append(None if batch.labels is None else batch.labels[:take])
        parts["ids"].append(np.asarray(batch.ids)[:take])
        seen += take
        if seen == n_images:
            break
    labels = None if parts["labels"][0] is None else np.concatenate(parts["labels"])
    return {
        "images": np.concatenate(parts["images"]),
        "labels": labels,
        "ids": np.concatenate(parts["ids"]),
    }
