"""One prepared check for the first GPU (``tig-batch bench gpu``; ``scripts/gpu_check.sh``
installs what it needs, then runs it).

GPU hosts come to this project rarely and briefly, so everything that has never run on one
runs in one command within a time budget: the environment; the demo models (trained and
exported, or reused from the cache); every Triton kernel against its torch twin at real image
sizes in float32 and float16 storage; ``bench kernels``; ``tig-batch explain --device`` on the
first mnist-5k test digits with every method and each backend, compared with a CPU run of the
same job that runs in the background meanwhile; plain and tangential IG throughput on the
device; Captum's IG against ours on the same device, model and images; and the goals these
measure. Each step's outcome, failures included, is written to ``gpu_check.json`` and
``gpu_check.md`` as soon as it ends: a step that fails or runs out of time is recorded, and
the steps that do not need it still run, so one session on a GPU yields all it can.

:data:`DRY_RUN` does the same on the CPU at tiny sizes with the kernels forced to their
twins: the plumbing, not the numbers (CI runs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tig_batch.backends import BackendName
from tig_batch.bench.e2e import E2ESettings, _finite
from tig_batch.study import Training

JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
Say = Callable[[str], None]


# plain IG against Captum on the device: every contender at each internal batch, best kept
_CAPTUM = E2ESettings(
    n_images=1000, batch_size=250, internal_batch_sizes=(1024, 4096, 12500), repeats=3,
    matmul_size=256, scaling=None,
)  # fmt: skip


@dataclass(frozen=True)
class GpuCheckSettings:
    """What the check runs. The explain job's quadrature, search and SmoothGrad settings are
    ``tig-batch explain``'s defaults unless set here (the dry run shrinks them)."""

    device: str = "cuda"
    twins_only: bool = False  # the kernels' places taken by their twins (dry run)
    kernel_images: tuple[str, ...] = ("mnist", "cifar", "tiny-imagenet")
    kernel_steps: tuple[int, ...] = (16, 32, 64)
    kernel_ranks: tuple[int, ...] = (16, 144)
    kernel_batch: int = 64
    dtypes: tuple[str, ...] = ("float32", "float16")
    kernel_repeats: int = 5  # CPU timings only; on a GPU do_bench decides
    peak_gbps: float | None = None  # None: read from the device
    models: Training = field(
        default_factory=lambda: Training(classifier_epochs=3, autoencoder_epochs=10)
    )
    n_images: int = 1000
    backends: tuple[BackendName, ...] = ("onnx", "torch")
    batch_size: int = 250  # explain's --batch-size, both runs
    internal_batch_size: int = 2048  # explain's --internal-batch-size, both runs
    n_steps: int | None = None
    search_iterations: int | None = None
    search_n_steps: int | None = None
    smoothgrad_samples: int | None = None
    device_threads: int = 4  # CPU threads of the runs on the device
    cpu_threads: int | None = None  # per CPU reference run; None: the other cores, shared
    captum: E2ESettings = field(default_factory=lambda: _CAPTUM)
    budget_s: float = 330.0

    def explain_flags(self) -> list[str]:
        """The explain job's options beyond the defaults, for the command line."""
        flags = {
            "--n-steps": self.n_steps,
            "--search-iterations": self.search_iterations,
            "--search-n-steps": self.search_n_steps,
            "--smoothgrad-samples": self.smoothgrad_samples,
        }
        return [part for k, v in flags.items() if v is not None for part in (k, str(v))]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FULL = GpuCheckSettings()
DRY_RUN = GpuCheckSettings(
    device="cpu", twins_only=True, kernel_images=("mnist",), kernel_steps=(3,),
    kernel_ranks=(4,), kernel_batch=2, kernel_repeats=1,
    models=Training(classifier_epochs=1, autoencoder_epochs=1, max_steps=5),
    n_images=6, batch_size=3, internal_batch_size=64, n_steps=4, search_iterations=2,
    search_n_steps=2, smoothgrad_samples=2, device_threads=1, cpu_threads=1,
    captum=E2ESettings(
        n_images=6, batch_size=3, n_steps=4, internal_batch_sizes=(8, 24), repeats=1,
        matmul_size=64, scaling=None,
    ),
    budget_s=600.0,
)  # fmt: skip


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome: ``ok``, ``failed``, ``timed out`` or ``skipped`` (and why)."""

    name: str
    status: str
    seconds: float
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Goal:
    """A goal of the first GPU run, what was measured for it, and whether it was met (None:
    not measured)."""

    goal: str
    measured: str
    met: bool | None


class StepTimeoutError(Exception):
    """A step ran past the check's deadline."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`StepTimeoutError` after ``seconds`` (main thread only; else no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise StepTimeoutError(f"ran past the check's time budget ({seconds:.0f} s were left)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """Runs steps within one deadline, records each, and rewrites the report after each."""

    def __init__(self, out_dir: Path, settings: GpuCheckSettings, say: Say) -> None:
        self.out_dir, self.settings, self.say = out_dir, settings, say
        self.deadline = time.monotonic() + settings.budget_s
        self.records: list[StepRecord] = []
        self.extra: dict[str, Any] = {}  # shared between steps, not reported
        out_dir.mkdir(parents=True, exist_ok=True)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def status(self, name: str) -> str | None:
        return next((r.status for r in self.records if r.name == name), None)

    def data(self, name: str) -> dict[str, Any]:
        return next((r.data for r in self.records if r.name == name), {})

    def run(
        self, name: str, step: Callable[[], dict[str, Any]], needs: tuple[str, ...] = ()
    ) -> None:
        """Run ``step`` unless a step it needs did not succeed or no time is left; a step's
        data with a non-empty ``failures`` entry marks it failed (its data kept)."""
        missing = [n for n in needs if self.status(n) != "ok"]
        start = time.monotonic()
        if missing:
            record = StepRecord(name, "skipped", 0.0, f"needs {', '.join(missing)}")
        elif self.remaining() < 1:
            record = StepRecord(name, "skipped", 0.0, "no time left in the budget")
        else:
            self.say(f"{name} ...")
            record = self._attempt(name, step, start)
        self.records.append(record)
        self.say(f"{name}: {record.status} in {record.seconds:.1f} s" + _reason(record))
        self.write()

    def _attempt(self, name: str, step: Callable[[], dict[str, Any]], start: float) -> StepRecord:
        try:
            with _alarm(self.remaining()):
                data = step()
        except StepTimeoutError as error:
            return StepRecord(name, "timed out", time.monotonic() - start, str(error))
        except Exception as error:
            trace = traceback.format_exc(limit=8)
            return StepRecord(
                name, "failed", time.monotonic() - start, f"{type(error).__name__}: {error}",
                {"traceback": trace[-4000:]},
            )  # fmt: skip
        failures = data.get("failures")
        status = "failed" if failures else "ok"
        error = "; ".join(f"{k}: {v}" for k, v in failures.items()) if failures else None
        return StepRecord(name, status, time.monotonic() - start, error, data)

    def report(self) -> dict[str, Any]:
        from tig_batch.bench._gpu_report import goals

        return {
            "settings": self.settings.to_dict(),
            "steps": [dataclasses.asdict(r) for r in self.records],
            "goals": [dataclasses.asdict(g) for g in goals(self)],
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def write(self) -> None:
        """Both files, each replaced whole, so a kill between steps leaves a readable pair."""
        from tig_batch.bench._gpu_report import to_markdown

        report = self.report()
        for name, text in (
            (JSON_NAME, json.dumps(_finite(report), indent=2) + "\n"),
            (MARKDOWN_NAME, to_markdown(report)),
        ):
            partial = self.out_dir / f".{name}.partial"
            partial.write_text(text)
            partial.replace(self.out_dir / name)


def _reason(record: StepRecord) -> str:
    return "" if record.error is None else f" ({record.error.splitlines()[0][:300]})"


def prepare_models(settings: GpuCheckSettings, say: Say | None = None) -> Path:
    """Ingest mnist-5k and train and export the check's demo models into the tig-batch cache
    (``$TIG_BATCH_CACHE``), where the check finds them: a folder to carry to a GPU host.
    Returns the bundle's path."""
    from tig_batch.bench._gpu_steps import models

    return Path(models(settings, say or (lambda text: None))["bundle"])


def run_gpu_check(
    out_dir: Path | str,
    settings: GpuCheckSettings = FULL,
    work_dir: Path | str | None = None,
    install_log: Path | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Run every step (see the module's docstring); returns the report written to
    ``out_dir/gpu_check.json``. ``work_dir`` keeps the explain inputs and outputs (default: a
    temporary directory, removed after); ``install_log`` is the installer's log (one
    tab-separated line per step: what, status, seconds, detail), shown with the environment."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="tig-gpu-check-") as scratch:
            return run_gpu_check(out_dir, settings, scratch, install_log, say)
    from tig_batch.bench import _gpu_steps as steps

    check = Check(Path(out_dir), settings, say or (lambda text: None))
    work = Path(work_dir)
    check.run("environment", lambda: steps.environment(settings, install_log))
    check.run("models", lambda: steps.models(settings, check.say))
    check.run(
        "cpu reference (started)", lambda: steps.start_cpu_reference(check, work), ("models",)
    )
    for name, step in (
        ("kernel correctness", steps.kernel_correctness),
        ("kernel benchmark", steps.kernel_benchmark),
    ):
        check.run(name, lambda step=step: step(settings, check.say), ("environment",))
    on_device = ("environment", "models")
    check.run("explain on the device", lambda: steps.device_explain(check, work), on_device)
    check.run("throughput on the device", lambda: steps.throughput(check), on_device)
    check.run("captum on the device", lambda: steps.captum(check), on_device)
    check.run(
        "explain: device against cpu", lambda: steps.compare_explain(check, work),
        ("cpu reference (started)", "explain on the device"),
    )  # fmt: skip
    steps.stop_cpu_reference(check)
    return check.report()
