"""The paper-reproduction study's definition: its settings, cache keys, data and models.

``scripts/reproduce_paper.py`` measures the paper's claim with the library's own path end to
end; this module holds what that study *is*, so the script is only its command line. Every
expensive step (training, export, explaining, each ablation variant) is cached in a work
directory under a key derived from the settings that determine it: a rerun, or
``--cached-only``, finds finished work as long as those settings are unchanged. Settings are
therefore pinned here field by field wherever a library default could move under them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tig_batch.backends import BackendName, Bundle, Runtime, load_bundle
from tig_batch.data import (
    BUILTIN_DATASETS,
    DatasetInfo,
    Records,
    ShardSpec,
    builtin_dataset,
    iter_batches,
    open_dataset,
    write_shards,
)
from tig_batch.engine import BaselineSearch
from tig_batch.errors import DataError, ModelError
from tig_batch.pipeline import ExplainConfig

Log = Callable[[str], None]


# The ablations' search: the paper's, a frozen-path ascent on mu with no gap constraint, 50
# steps of 16 quadrature nodes. The ablations ask the paper's open questions of its own method.
ASCENT = BaselineSearch(optimizer="ascent", n_iterations=50, n_steps=16, min_gap=0.0)


@dataclass(frozen=True)
class Settings:
    """What is trained and how it is explained. :data:`FULL` is ``tig-batch explain``'s
    defaults with the quickstart's training; :data:`QUICK` is a smoke run for tests. The main
    comparison's tangential method also runs in paper mode (``paper_config``: no gap
    constraint). The ablations search from ``ablation_search`` (they vary its ascent
    settings), with the rest of ``explain``."""

    classifier_epochs: int = 10
    autoencoder_epochs: int = 20
    max_steps: int | None = None
    latent_dim: int = 16
    seed: int = 0
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    n_images: int | None = None  # None: the whole test split
    batch_size: int = 50
    n_examples: int = 8
    ablation_images: int = 200
    shard_size: int = 100  # images per explained shard: the unit of a partial result
    ablation_search: BaselineSearch = ASCENT

    @property
    def paper_config(self) -> ExplainConfig:
        """The main comparison's tangential method in paper mode: ``min_gap`` 0."""
        search = replace(self.explain.search, min_gap=0.0)
        return replace(self.explain, methods=("tangential",), search=search, seed=self.seed)

    @property
    def ablation_config(self) -> ExplainConfig:
        """The explain settings the ablations start from (part of their cache keys)."""
        return replace(self.explain, search=self.ablation_search)


FULL = Settings()
_QUICK_SEARCH = replace(ASCENT, n_iterations=3, n_steps=8)
# the main run searches like the ablations here, so the tests can hold one against the other
QUICK = Settings(
    classifier_epochs=1, autoencoder_epochs=1, max_steps=20, n_images=12, batch_size=6,
    explain=ExplainConfig(n_steps=8, search=_QUICK_SEARCH, smoothgrad_samples=3),
    n_examples=4, ablation_images=6, shard_size=6, ablation_search=_QUICK_SEARCH,
)  # fmt: skip


def plain(value: object) -> object:
    """``value`` as JSON-ready lists and dicts (dataclasses field by field, every field: a
    setting added to the library changes the keys, so no cached result outlives its
    settings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def digest(value: object) -> str:
    """A short stable hash of settings: the cache key of what they produce."""
    text = json.dumps(plain(value), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Splits:
    """The dataset the study trains on and explains: ``name`` is what the page calls it."""

    name: str
    train: Path
    test: Path

    def identity(self) -> list:
        """What the trained models depend on: the shards' paths, sizes and modification times."""
        files = [s.path for p in (self.train, self.test) for s in open_dataset(p).shards]
        return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def resolve_splits(data: str, test_data: str | None) -> Splits:
    """The built-in dataset's two splits, or ``data`` (train) and ``test_data`` shards."""
    if data in BUILTIN_DATASETS:
        return Splits(data, builtin_dataset(data, "train"), builtin_dataset(data, "test"))
    train = Path(data)
    if not train.exists():
        raise DataError(
            f"{data}: no such dataset file or directory, and not a built-in dataset "
            f"({', '.join(BUILTIN_DATASETS)})"
        )
    if test_data is None:
        raise DataError(f"{data}: give its test split with --test-data (a file or directory)")
    if not Path(test_data).exists():
        raise DataError(f"{test_data}: no such test dataset file or directory")
    splits = Splits(str(data), train, Path(test_data))
    if open_dataset(train).shape != open_dataset(splits.test).shape:
        raise DataError(f"{test_data}: test images differ in shape from {data}")
    return splits


def train_model(
    kind: str, path: Path, splits: Splits, settings: Settings, latent: int, threads: int | None,
    log: Log, cached_only: bool = False,
) -> dict:  # fmt: skip
    """The test metrics of the checkpoint ``path``, training it first unless it is there."""
    from tig_batch.models import (
        TrainConfig,
        checkpoint_paths,
        load_checkpoint,
        save_checkpoint,
        train_autoencoder,
        train_classifier,
    )

    name = kind if kind == "classifier" else f"{kind} n={latent}"
    try:
        load_checkpoint(path, kind)
        log(f"{name}: reusing {path}.pt")
        return json.loads(checkpoint_paths(path)[2].read_text())
    except (ModelError, DataError, OSError, ValueError):
        pass
    if cached_only:
        raise ModelError(f"{path}.pt: not trained yet, and --cached-only trains nothing")
    epochs = settings.classifier_epochs if kind == "classifier" else settings.autoencoder_epochs
    log(f"{name}: training {epochs} epoch(s)")
    config = TrainConfig(
        epochs=epochs, seed=settings.seed, max_steps=settings.max_steps, threads=threads
    )
    train, test = open_dataset(splits.train), open_dataset(splits.test)
    if kind == "classifier":
        result = train_classifier(train, test, config, progress=False)
    else:
        result = train_autoencoder(train, test, config, latent_dim=latent, progress=False)
    save_checkpoint(path, result.model, result.metadata)
    return result.metrics


def bundle_for(models: Path, latent: int, log: Log) -> Path:
    """The ONNX bundle of the classifier and the ``latent`` autoencoder, exported once."""
    from tig_batch._bundle import read_manifest, sha256
    from tig_batch.export import export_checkpoints
    from tig_batch.models import checkpoint_paths

    bundle = models / f"bundle-n{latent}"
    checkpoints = {"classifier": models / "classifier", "autoencoder": models / f"ae-n{latent}"}
    try:
        files = read_manifest(bundle).files
        if all(
            files.get(f"torch/{kind}.pt") == sha256(checkpoint_paths(path)[0])
            for kind, path in checkpoints.items()
        ):
            log(f"bundle n={latent}: reusing {bundle}")
            return bundle
    except (ModelError, DataError, OSError, ValueError):
        pass
    log(f"bundle n={latent}: exporting to ONNX in {bundle}")
    export_checkpoints(
        checkpoints["autoencoder"], bundle, checkpoint=checkpoints["classifier"], overwrite=True
    )
    return bundle


@dataclass
class Models:
    """The models directory, each model's test metrics, and what had to be trained."""

    directory: Path
    metrics: dict[str, dict] = field(default_factory=dict)


def ensure_models(
    work: Path, splits: Splits, settings: Settings, latents: Sequence[int],
    threads: int | None, log: Log, cached_only: bool = False,
) -> Models:  # fmt: skip
    """Train (or reuse) the classifier and one autoencoder per latent size; export bundles."""
    key = digest(
        {
            "data": splits.identity(),
            "epochs": [settings.classifier_epochs, settings.autoencoder_epochs],
            "max_steps": settings.max_steps,
            "seed": settings.seed,
        }
    )
    models = Models(work / f"models-{key}")
    models.metrics["classifier"] = train_model(
        "classifier", models.directory / "classifier", splits, settings, 0, threads, log,
        cached_only,
    )  # fmt: skip
    for n in dict.fromkeys(latents):
        path = models.directory / f"ae-n{n}"
        models.metrics[f"ae-n{n}"] = train_model(
            "autoencoder", path, splits, settings, n, threads, log, cached_only
        )
        bundle_for(models.directory, n, log)
    return models


def open_bundle(models: Path, latent: int, backend: BackendName, threads: int | None) -> Bundle:
    """The bundle of the classifier and the autoencoder with latent size ``latent``."""
    return load_bundle(models / f"bundle-n{latent}", Runtime(backend, threads=threads))


def first_test_shards(test: Path, n_images: int | None, directory: Path, shard_size: int) -> Path:
    """The first ``n_images`` test images (None: all) as shards of ``shard_size`` images.

    Explained shard by shard, so a run stopped part-way still reports the shards it finished.
    """
    info = open_dataset(test)
    n_images = min(n_images or info.count, info.count)
    path = directory / f"test-first{n_images}-by{shard_size}"
    if path.is_dir():
        return path
    batch = read_images(info, n_images)
    lo, hi = info.value_range
    if info.dtype == "uint8":  # store the shard's own uint8s, so pixels decode identically
        stored = np.round((batch["images"] - lo) / (hi - lo) * 255).astype(np.uint8)
    else:
        stored = batch["images"]
    spec = ShardSpec(
        info.shape, info.dtype, info.value_range, info.channel_layout, info.class_names,
        split="test", source=f"first {n_images} images of {test}",
    )  # fmt: skip
    partial = directory / f".{path.name}.partial"
    records = Records(stored, batch["labels"], batch["ids"])
    write_shards([records], partial, spec, shard_size=shard_size, overwrite=True)
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
