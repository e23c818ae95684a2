"""The whole job on the built-in ``mnist-5k`` digits: data, models, bundle, explanations, report.

Every step calls the same library function its own command calls (``builtin_dataset``,
``train_classifier``/``train_autoencoder`` and ``export_checkpoints`` through the train-or-reuse
steps the paper study shares, ``run`` on a ``Job``, ``write_report``). Models and the bundle
are kept in a cache directory keyed by the training settings, so a second run only explains
what is missing and redraws the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tig_batch.data import builtin_dataset, cache_dir, open_dataset, resolve_dataset
from tig_batch.engine import BaselineSearch
from tig_batch.job import Storage
from tig_batch.pipeline import ExplainConfig
from tig_batch.study import Training, ensure_bundle, ensure_checkpoint, first_images

DATASET = "mnist-5k"
RECORD = "quickstart.json"  # in the output directory: where the run's models and inputs are
Log = Callable[[str], None]
# progress(total, description): a context manager giving a bar with update(n), e.g. tqdm
ProgressFactory = Callable[[int, str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class QuickstartSettings:
    """What the quickstart trains and how it explains; :data:`DEFAULT` and :data:`FAST`.

    ``n_images`` test images are explained (None: all 1,000). The explanations trade
    accuracy of the numbers for time: fewer quadrature nodes and SmoothGrad samples than
    ``tig-batch explain``'s defaults (docs/quickstart.md says what that changes).
    """

    training: Training = field(default_factory=Training)
    explain: ExplainConfig = field(
        default_factory=lambda: ExplainConfig(n_steps=16, smoothgrad_samples=5)
    )
    storage: Storage = field(default_factory=lambda: Storage(batch_size=50))
    n_images: int | None = None
    n_examples: int = 10


DEFAULT = QuickstartSettings()
FAST = QuickstartSettings(
    Training(classifier_epochs=1, autoencoder_epochs=1, max_steps=20),
    ExplainConfig(
        n_steps=8, search=BaselineSearch(n_iterations=3, n_steps=8), smoothgrad_samples=3
    ),
    Storage(batch_size=6), n_images=12, n_examples=6,
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
    from tig_batch.job import Job, plan
    from tig_batch.report import write_report
    from tig_batch.runner import run

    say = log or (lambda message: None)
    out, seconds = Path(out_dir), {}
    models = Path(cache or default_cache_dir()) / f"models-{settings.training.key()}"
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    say(f"[1/6] data: {DATASET} shards")
    test = builtin_dataset(DATASET, "test")
    builtin_dataset(DATASET, "train")
    inputs = test
    if settings.n_images is not None and settings.n_images < open_dataset(test).count:
        name = f"{DATASET}-test-first{settings.n_images}.h5"
        inputs = first_images(test, settings.n_images, models.parent / "inputs" / name,
                              name=f"{DATASET} test")  # fmt: skip
    lap("data")

    def say_step(step: int, text: str) -> None:
        say(f"[{step}/6] {text}")

    built = build_models(settings.training, models, say_step, progress is not None, say)
    seconds.update(built.seconds)
    checkpoints, bundle, reused = built.checkpoints, built.bundle, list(built.reused)
    clock = time.perf_counter()

    storage = replace(settings.storage, overwrite=overwrite or built.retrained)
    explained = out / "explained"
    planned = plan(Job(bundle, (inputs,), explained, settings.explain, storage=storage))
    methods = len(settings.explain.methods)
    say(f"[5/6] explain: {planned.n_images} test images, {methods} methods")
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
    training: Training,
    models: Path,
    say_step: Callable[[int, str], None] = lambda step, text: None,
    progress: bool = False,
    log: Log | None = None,
) -> Models:
    """Train the classifier and the autoencoder of ``training`` and export their bundle into
    ``models``, reusing whatever is there already (checkpoints of the same settings, a bundle
    exported from exactly those checkpoints). ``say_step(n, text)`` hears steps 2 to 4, ``log``
    the trainings' lines; ``progress`` shows the trainings' bars."""
    checkpoints = {kind: models / kind for kind in ("classifier", "autoencoder")}
    train, test = resolve_dataset(DATASET, "train"), resolve_dataset(DATASET, "test")
    metrics, reused, retrained, seconds = {}, [], False, {}
    for step, kind in enumerate(checkpoints, start=2):
        clock = time.perf_counter()
        metrics[kind], kept = ensure_checkpoint(
            kind, checkpoints[kind], train, test, training, progress=progress, log=log,
            say=lambda text, step=step, kind=kind: say_step(step, f"{kind}: {text}"),
        )  # fmt: skip
        reused += [kind] if kept else []
        retrained |= not kept
        seconds[kind] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    bundle = models / "bundle"
    if ensure_bundle(bundle, checkpoints, lambda text: say_step(4, f"bundle: {text}")):
        reused.append("bundle")
    seconds["export"] = round(time.perf_counter() - clock, 1)
    return Models(checkpoints, bundle, metrics, tuple(reused), retrained, seconds)
