"""The paper-reproduction study's definition: its settings, cache keys, data and models.

``scripts/reproduce_paper.py`` measures the paper's claim with the library's own path end to
end; this module holds what that study *is*, so the script is only its command line. Every
expensive step (training, export, explaining, each ablation variant) is cached in a work
directory under a key derived from the settings that determine it: a rerun, or
``--cached-only``, finds finished work as long as those settings are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tig_batch.backends import BackendName, Bundle, Runtime, load_bundle
from tig_batch.data import BUILTIN_DATASETS, builtin_dataset, open_dataset
from tig_batch.engine import BaselineSearch
from tig_batch.errors import DataError
from tig_batch.job import Storage
from tig_batch.pipeline import ExplainConfig
from tig_batch.study._build import Training, ensure_bundle, ensure_checkpoint

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

    training: Training = field(default_factory=Training)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    storage: Storage = field(default_factory=lambda: Storage(batch_size=50))
    n_images: int | None = None  # None: the whole test split
    n_examples: int = 8
    ablation_images: int = 200
    shard_size: int = 100  # images per explained shard: the unit of a partial result
    ablation_search: BaselineSearch = ASCENT

    @property
    def paper_config(self) -> ExplainConfig:
        """The main comparison's tangential method in paper mode: ``min_gap`` 0."""
        search = replace(self.explain.search, min_gap=0.0)
        return replace(self.explain, methods=("tangential",), search=search)

    @property
    def ablation_config(self) -> ExplainConfig:
        """The explain settings the ablations start from (part of their cache keys)."""
        return replace(self.explain, search=self.ablation_search)


FULL = Settings()
_QUICK_SEARCH = replace(ASCENT, n_iterations=3, n_steps=8)
# the main run searches like the ablations here, so the tests can hold one against the other
QUICK = Settings(
    Training(classifier_epochs=1, autoencoder_epochs=1, max_steps=20),
    ExplainConfig(n_steps=8, search=_QUICK_SEARCH, smoothgrad_samples=3), Storage(batch_size=6),
    n_images=12, n_examples=4, ablation_images=6, shard_size=6, ablation_search=_QUICK_SEARCH,
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


@dataclass
class Models:
    """The models directory, each model's test metrics, and what had to be trained."""

    directory: Path
    metrics: dict[str, dict] = field(default_factory=dict)


def ensure_models(
    work: Path, splits: Splits, settings: Settings, latents: Sequence[int],
    threads: int | None, log: Log, cached_only: bool = False,
) -> Models:  # fmt: skip
    """Train (or reuse) the classifier and one autoencoder per latent size, and export (or
    reuse) the bundle of the classifier with each (``bundle-n<latent>``)."""
    t = settings.training
    key = digest(
        {
            "data": splits.identity(),
            "epochs": [t.classifier_epochs, t.autoencoder_epochs],
            "max_steps": t.max_steps,
            "seed": t.seed,
        }
    )
    models = Models(work / f"models-{key}")
    directory = models.directory
    train, test = open_dataset(splits.train), open_dataset(splits.test)
    models.metrics["classifier"], _ = ensure_checkpoint(
        "classifier", directory / "classifier", train, test, t, threads=threads,
        say=_prefixed(log, "classifier"), cached_only=cached_only,
    )  # fmt: skip
    for n in dict.fromkeys(latents):
        models.metrics[f"ae-n{n}"], _ = ensure_checkpoint(
            "autoencoder", directory / f"ae-n{n}", train, test, replace(t, latent_dim=n),
            threads=threads, say=_prefixed(log, f"autoencoder n={n}"), cached_only=cached_only,
        )  # fmt: skip
        checkpoints = {"classifier": directory / "classifier"} | {
            "autoencoder": directory / f"ae-n{n}"
        }
        ensure_bundle(bundle_path(directory, n), checkpoints, _prefixed(log, f"bundle n={n}"))
    return models


def _prefixed(log: Log, name: str) -> Log:
    return lambda text: log(f"{name}: {text}")


def open_bundle(models: Path, latent: int, backend: BackendName, threads: int | None) -> Bundle:
    """The bundle of the classifier and the autoencoder with latent size ``latent``."""
    return load_bundle(bundle_path(models, latent), Runtime(backend, threads=threads))


def bundle_path(models: Path, latent: int) -> Path:
    """Where :func:`ensure_models` exports the bundle with the ``latent`` autoencoder."""
    return models / f"bundle-n{latent}"
