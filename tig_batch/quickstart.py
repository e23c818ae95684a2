"""The whole job on the built-in ``mnist-5k`` digits: data, models, bundle, explanations, report.

Every step calls the same library function its own command calls (``builtin_dataset``,
``train_classifier``/``train_autoencoder``, ``export_checkpoints``, ``run`` on a ``Job``,
``write_report``). Models and the bundle are kept in a cache directory keyed by the training
settings, so a second run only explains what is missing and redraws the report.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tig_batch.data import (
    Records,
    ShardSpec,
    builtin_dataset,
    cache_dir,
    iter_batches,
    open_dataset,
    write_shards,
)
from tig_batch.engine import BaselineSearch
from tig_batch.errors import DataError, ModelError
from tig_batch.pipeline import METHODS

DATASET = "mnist-5k"
RECORD = "quickstart.json"  # in the output directory: where the run's models and inputs are
Log = Callable[[str], None]
# progress(total, description): a context manager giving a bar with update(n), e.g. tqdm
ProgressFactory = Callable[[int, str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class QuickstartSettings:
    """What the quickstart trains and how it explains; :data:`DEFAULT` and :data:`FAST`.

    ``n_images`` test images are explained (None: all 1,000). The explain settings trade
    accuracy of the numbers for time: fewer quadrature nodes than ``tig-batch explain``'s
    defaults (see docs/quickstart.md for what that changes).
    """

    classifier_epochs: int = 10
    autoencoder_epochs: int = 20
    max_steps: int | None = None  # per training; None trains every epoch
    latent_dim: int = 16
    seed: int = 0
    n_images: int | None = None
    methods: tuple[str, ...] = METHODS
    n_steps: int = 16
    search: BaselineSearch = field(default_factory=BaselineSearch)
    smoothgrad_samples: int = 5
    batch_size: int = 50
    n_examples: int = 10

    def models_key(self) -> str:
        """A short hash of what determines the trained models (the cache directory's name)."""
        fields = ("classifier_epochs", "autoencoder_epochs", "max_steps", "latent_dim", "seed")
        text = json.dumps({f: getattr(self, f) for f in fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


DEFAULT = QuickstartSettings()
FAST = QuickstartSettings(
    classifier_epochs=1, autoencoder_epochs=1, max_steps=20, n_images=12, n_steps=8,
    search=BaselineSearch(n_iterations=3, n_steps=8), smoothgrad_samples=3, batch_size=6,
    n_examples=6,
)  # fmt: skip


@dataclass(frozen=True)
class QuickstartResult:
    """Where everything is, what was reused, and how long each step took (seconds)."""

    checkpoints: dict[str, Path]
    bundle: Path
    inputs: Path
    explained: Path
    outputs: list[Path]  # this run's explain outputs in ``explained``
    report: Path
    reused: list[str]
    metrics: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``<tig-batch cache>/quickstart`` (``$TIG_BATCH_CACHE`` or ``~/.cache/tig-batch``)."""
    return cache_dir() / "quickstart"


def _train(kind: str, path: Path, settings: QuickstartSettings, progress: bool, log: Log) -> dict:
    """Train one model into ``path`` (a checkpoint name); return its test metrics."""
    from tig_batch.data import resolve_dataset
    from tig_batch.models import TrainConfig, save_checkpoint, train_autoencoder, train_classifier

    train, test = resolve_dataset(DATASET, "train"), resolve_dataset(DATASET, "test")
    epochs = settings.classifier_epochs if kind == "classifier" else settings.autoencoder_epochs
    config = TrainConfig(epochs=epochs, seed=settings.seed, max_steps=settings.max_steps)
    if kind == "classifier":
        result = train_classifier(train, test, config, progress=progress, log=log)
    else:
        result = train_autoencoder(
            train, test, config, latent_dim=settings.latent_dim, progress=progress, log=log
        )
    save_checkpoint(path, result.model, result.metadata)
    return result.metrics


def _cached_metrics(path: Path, kind: str) -> dict | None:
    """The metrics of a usable cached checkpoint, or None when it must be (re)trained."""
    from tig_batch.models import checkpoint_paths, load_checkpoint

    try:
        load_checkpoint(path, kind)
        metrics = checkpoint_paths(path)[2]
        return json.loads(metrics.read_text()) if metrics.is_file() else {}
    except (ModelError, DataError, OSError, ValueError):
        return None


def first_test_images(test: Path, n_images: int | None, directory: Path) -> Path:
    """The first ``n_images`` test images as one shard (the test shard itself for all)."""
    info = open_dataset(test)
    if n_images is None or n_images >= info.count:
        return test
    path = directory / f"{DATASET}-test-first{n_images}.h5"
    if path.is_file():
        return path
    images, labels, ids, seen = [], [], [], 0
    for batch in iter_batches(info, 256):
        take = min(len(batch), n_images - seen)
        images.append(batch.images[:take])
        labels.append(batch.labels[:take])
        ids.append(batch.ids[:take])
        seen += take
        if seen == n_images:
            break
    stored = np.round(np.concatenate(images) * 255).astype(np.uint8)  # the shard's own uint8s
    spec = ShardSpec(
        info.shape, class_names=info.class_names, split="test",
        source=f"first {n_images} images of {DATASET} test",
    )  # fmt: skip
    partial = path.with_name(f".{path.stem}.partial.h5")  # renamed once whole
    records = Records(stored, np.concatenate(labels), np.concatenate(ids))
    write_shards([records], partial, spec, overwrite=True)
    partial.replace(path)
    return path


def run_quickstart(
    out_dir: Path | str,
    cache: Path | str | None = None,
    settings: QuickstartSettings = DEFAULT,
    *,
    progress: ProgressFactory | None = None,
    log: Log | None = None,
    overwrite: bool = False,
) -> QuickstartResult:
    """Build data, models and bundle (or reuse them from ``cache``), explain, and report.

    Explanations go to ``<out_dir>/explained`` and the report to ``<out_dir>/report``. A rerun
    resumes: finished explanations of the same job are kept. ``overwrite`` recomputes them.
    ``progress(total, description)`` gives a bar for the explain step; trainings show their own
    bars when ``progress`` is given.
    """
    from tig_batch.job import Job, Storage, plan
    from tig_batch.pipeline import ExplainConfig
    from tig_batch.report import write_report
    from tig_batch.runner import run

    say = log or (lambda message: None)
    out, seconds = Path(out_dir), {}
    models = Path(cache or default_cache_dir()) / f"models-{settings.models_key()}"
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    say(f"[1/6] data: {DATASET} shards")
    test = builtin_dataset(DATASET, "test")
    builtin_dataset(DATASET, "train")
    inputs = first_test_images(test, settings.n_images, models.parent / "inputs")
    lap("data")

    def say_step(step: int, text: str) -> None:
        say(f"[{step}/6] {text}")

    built = build_models(settings, models, say_step, progress is not None, say)
    seconds.update(built.seconds)
    checkpoints, bundle, reused = built.checkpoints, built.bundle, list(built.reused)
    clock = time.perf_counter()

    config = ExplainConfig(
        methods=settings.methods, n_steps=settings.n_steps, search=settings.search,
        seed=settings.seed, smoothgrad_samples=settings.smoothgrad_samples,
    )  # fmt: skip
    storage = Storage(settings.batch_size, overwrite=overwrite or built.retrained)
    explained = out / "explained"
    planned = plan(Job(bundle, (inputs,), explained, config, storage=storage))
    say(f"[5/6] explain: {planned.n_images} test images, {len(settings.methods)} methods")
    if progress is None:
        outputs = run(planned)
    else:
        with progress(planned.n_images, "explain") as bar:
            outputs = run(planned, on_images=bar.update)
    lap("explain")

    say(f"[6/6] report: {out / 'report'}")
    # this run's outputs only: explained/ may also hold another run's (e.g. --fast's subset)
    written = write_report(outputs, out / "report", n_examples=settings.n_examples)
    lap("report")
    result = QuickstartResult(
        checkpoints={k: v.with_suffix(".pt") for k, v in checkpoints.items()}, bundle=bundle,
        inputs=inputs, explained=explained, outputs=outputs, report=written.files["html"],
        reused=reused,
        metrics={
            k: v for m in built.metrics.values() for k, v in m.items() if k.startswith("test_")
        },
        seconds=seconds,
    )  # fmt: skip
    _write_record(out / RECORD, result)
    return result


def _write_record(path: Path, result: QuickstartResult) -> None:
    """Where this run's models, bundle and inputs are (absolute paths), for Python users:
    the README's example loads them from here."""
    record = {
        "checkpoints": {k: str(v.resolve()) for k, v in result.checkpoints.items()},
        "bundle": str(result.bundle.resolve()),
        "inputs": str(result.inputs.resolve()),
        "explained": str(result.explained.resolve()),
        "report": str(result.report.resolve()),
    }
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)


@dataclass(frozen=True)
class Models:
    """Trained checkpoints and their bundle: what was reused, their test metrics, and the
    seconds each step took."""

    checkpoints: dict[str, Path]  # classifier, autoencoder -> checkpoint name
    bundle: Path
    metrics: dict[str, dict]
    reused: tuple[str, ...]
    retrained: bool
    seconds: dict[str, float]


def build_models(
    settings: QuickstartSettings,
    models: Path,
    say_step: Callable[[int, str], None] = lambda step, text: None,
    progress: bool = False,
    log: Log | None = None,
) -> Models:
    """Train the classifier and the autoencoder of ``settings`` and export their bundle into
    ``models``, reusing whatever is there already (checkpoints of the same settings, a bundle
    exported from exactly those checkpoints). ``say_step(n, text)`` hears steps 2 to 4, ``log``
    the trainings' lines; ``progress`` shows the trainings' bars."""
    from tig_batch.export import export_checkpoints

    checkpoints = {kind: models / kind for kind in ("classifier", "autoencoder")}
    metrics, reused, retrained, seconds = {}, [], False, {}
    for step, kind in enumerate(checkpoints, start=2):
        clock = time.perf_counter()
        cached = _cached_metrics(checkpoints[kind], kind)
        if cached is not None:
            say_step(step, f"{kind}: reusing {checkpoints[kind]}.pt")
            reused.append(kind)
        else:
            say_step(step, f"{kind}: training ({_epochs(settings, kind)})")
            cached = _train(kind, checkpoints[kind], settings, progress, log or (lambda text: None))
            retrained = True
        metrics[kind] = cached
        seconds[kind] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    bundle = models / "bundle"
    if not retrained and _bundle_matches(bundle, checkpoints):
        reused.append("bundle")
        say_step(4, f"bundle: reusing {bundle}")
    else:
        say_step(4, f"bundle: exporting to ONNX and verifying against torch in {bundle}")
        export_checkpoints(
            checkpoints["autoencoder"], bundle, checkpoint=checkpoints["classifier"],
            overwrite=True,
        )  # fmt: skip
    seconds["export"] = round(time.perf_counter() - clock, 1)
    return Models(checkpoints, bundle, metrics, tuple(reused), retrained, seconds)


def _epochs(settings: QuickstartSettings, kind: str) -> str:
    epochs = settings.classifier_epochs if kind == "classifier" else settings.autoencoder_epochs
    limit = f", at most {settings.max_steps} steps" if settings.max_steps else ""
    return f"{epochs} epoch{'s' if epochs != 1 else ''}{limit}"


def _bundle_matches(bundle: Path, checkpoints: dict[str, Path]) -> bool:
    """Whether ``bundle`` is intact and was exported from exactly these checkpoints."""
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
