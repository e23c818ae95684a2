"""End to end (``tig-batch bench e2e``): tig-batch against Captum and a paper-style reference.

On one bundle, the same mnist-5k test digits and the same settings, in one process run:
plain IG by Captum, tig-batch's torch backend and its ONNX backend, each at every internal
batch size and reported at its fastest (torch eager's best size is far from ONNX Runtime's);
tangential IG by the paper-style reference (:mod:`tig_batch.bench.reference`, in
``_e2e_tangential``) and by tig-batch's batched search (one contender per
:class:`~tig_batch.engine.BaselineSearch`); the peak RSS of each; the
classifier's achieved GFLOP/s against a float32 matrix product's; ``explain`` at its defaults
with and without the default faithfulness metrics (``_e2e_metrics``); and the scaling curves
(:mod:`tig_batch.bench.scaling`). ``E2ESettings.parts`` picks the parts. Contenders are timed
in alternation so that drifting machine load hits all alike; compare ratios, not absolute
rates.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, BackendName, Runtime, load_bundle
from tig_batch.bench._e2e_goals import CAPTUM, Goal, goals_met
from tig_batch.bench._e2e_metrics import MetricsOverhead, metrics_overhead
from tig_batch.bench._e2e_tangential import TangentialRow, search_with_overrides, tangential
from tig_batch.bench._measure import (
    FlopReport,
    alternate,
    gradient_flops,
)
from tig_batch.bench.reference import ReferenceSearch
from tig_batch.bench.scaling import Progress, ScalingCurve, ScalingGrid, scaling_curves
from tig_batch.engine import (
    BaselineSearch,
    integrated_gradients,
)
from tig_batch.errors import ModelError, TigBatchError
from tig_batch.pipeline import ExplainConfig

MATMUL, MATMUL_CALLS = "matmul", 3  # products per alternating round

# Our tangential contenders: one BaselineSearch each, compared with the reference, which keeps
# the same share of the zero base-point's output gap as the defaults (ReferenceSearch.min_gap).
SEARCHES: dict[str, BaselineSearch] = {
    "tig-batch defaults": BaselineSearch(),  # surrogate, 60 steps of 2 nodes, min_gap 0.5
    "tig-batch surrogate, 30 steps": BaselineSearch(n_iterations=30),
    "tig-batch projection, min gap 0.5": BaselineSearch(optimizer="projection"),
    "tig-batch ascent, 200 steps of 4 nodes, lr 2, min gap 0.5": BaselineSearch(
        optimizer="ascent", n_iterations=200, n_steps=4, lr=2.0
    ),
}


PARTS = ("plain", "tangential", "metrics")


@dataclass(frozen=True)
class E2ESettings:
    """What ``bench e2e`` runs: ``parts`` (of :data:`PARTS`), then the scaling curves unless
    ``scaling`` is None. ``search_iterations``/``search_n_steps`` override every tangential
    contender's search (only ``--quick`` does, to stay small). The metrics part runs
    ``explain`` with ``explain`` (its defaults) on ``metrics_images`` digits."""

    n_images: int = 64  # plain IG and our tangential IG
    batch_size: int = 32  # images per call, every contender
    n_steps: int = 50  # final IG nodes (midpoint)
    # plain IG runs every contender at each and compares each at its best: torch eager ran
    # 1.8x faster at 64-128 samples per call than at 512, ONNX Runtime about as fast at all
    internal_batch_sizes: tuple[int, ...] = (64, 128, 256, 512)
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE  # the tangential searches'
    repeats: int = 3
    tangential_repeats: int = 2  # alternating rounds of the tangential contenders
    reference_images: int = 8
    reference: ReferenceSearch = field(default_factory=ReferenceSearch)
    search_iterations: int | None = None
    search_n_steps: int | None = None
    matmul_size: int = 2048
    scaling: ScalingGrid | None = field(default_factory=ScalingGrid)
    parts: tuple[str, ...] = PARTS
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    metrics_images: int = 64
    metrics_repeats: int = 3
    smoke: bool = False  # --quick: the numbers show that it runs, not how fast

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(
                f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}"
            )


QUICK = E2ESettings(
    n_images=4, batch_size=2, n_steps=8, internal_batch_sizes=(4, 16), repeats=1,
    tangential_repeats=1, reference_images=2,
    reference=ReferenceSearch(n_iterations=3, n_steps=4), search_iterations=3, search_n_steps=4,
    matmul_size=256, smoke=True, metrics_images=4, metrics_repeats=1,
    explain=ExplainConfig(
        n_steps=8, search=BaselineSearch(n_iterations=3, n_steps=4), smoothgrad_samples=3
    ),
    scaling=ScalingGrid(
        batch_sizes=(1, 2), n_steps=(4, 8), shapes=((1, 28, 28),), ranks=(4, 8), batch_size=2,
        ig_steps=8, search_steps=4, rank=4, repeats=1,
    ),
)  # fmt: skip


# ------------------------------------------------------------------------------ plain IG


@dataclass(frozen=True)
class PlainRow:
    """One plain-IG contender at its best internal batch size: throughput, its ratio to
    Captum's best, agreement, memory, GFLOP/s; and its throughput at every size tried."""

    name: str
    internal_batch_size: int
    images_per_s: float
    ratio_to_captum: float
    max_abs_diff: float  # against Captum's attributions
    max_rel_diff: float  # the same over Captum's largest |attribution|
    peak_rss_mib: float | None
    rss_growth_mib: float | None
    gflops: float
    percent_of_matmul: float
    images_per_s_by_internal_batch: dict[int, float]


def _captum_ig() -> Any:
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise TigBatchError(
            "the e2e benchmark compares against Captum, which is not installed: "
            "pip install captum (or pip install -e '.[dev]')"
        ) from None
    return IntegratedGradients


def _batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, target, size):  # type: ignore[no-untyped-def]
    return lambda: torch.cat(
        [fn(x[i : i + size], target[i : i + size]) for i in range(0, len(x), size)]
    )


def _synchronized(call: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``call``, returning only once a GPU has finished its work (so timers see it)."""

    def run() -> torch.Tensor:
        out = call()
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        return out

    return run


def plain_ig(
    bundle: Path,
    images: torch.Tensor,
    target: torch.Tensor,
    settings: E2ESettings,
    runtime: Runtime,
    per_evaluation: float,
    backends: tuple[BackendName, ...] = ("torch", "onnx"),
) -> tuple[list[PlainRow], FlopReport]:
    """Captum and tig-batch on each of ``backends``, on the same images, nodes and targets,
    each at every internal batch size of ``settings``; rows report each at its fastest.
    On a GPU (``images`` and ``runtime`` on one) every timed call ends by synchronising."""
    integrated = _captum_ig()
    torch_runtime = dataclasses.replace(runtime, backend="torch")
    module = load_bundle(bundle, torch_runtime).classifier.module  # type: ignore[attr-defined]
    classifiers = {
        name: load_bundle(bundle, dataclasses.replace(runtime, backend=name)).classifier
        for name in backends
    }
    k = settings.n_steps

    def captum(ibs: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, t: integrated(module).attribute(
            x, target=t, n_steps=k, method="riemann_middle", internal_batch_size=ibs
        )

    def ours(classifier, ibs: int):  # type: ignore[no-untyped-def]
        return lambda x, t: (
            integrated_gradients(classifier, x, 0.0, t, k, "midpoint", ibs).attributions
        )

    contenders = {
        CAPTUM: captum,
        **{f"tig-batch {n}": partial(ours, c) for n, c in classifiers.items()},
    }
    calls: dict[Any, Callable[[], Any]] = {
        (name, ibs): _synchronized(_batched(make(ibs), images, target, settings.batch_size))
        for name, make in contenders.items()
        for ibs in settings.internal_batch_sizes
    }
    n = settings.matmul_size
    a, b = torch.rand(n, n), torch.rand(n, n)
    calls[MATMUL] = lambda: [torch.mm(a, b) for _ in range(MATMUL_CALLS)]
    measured = alternate(calls, settings.repeats)  # the matmul under the same load as IG
    matmul = measured.pop(MATMUL)
    flops = FlopReport(
        per_evaluation, n, 2 * n**3 * MATMUL_CALLS / statistics.median(matmul.seconds) / 1e9
    )
    rates = {key: len(images) / statistics.median(m.seconds) for key, m in measured.items()}
    best = {
        name: max(settings.internal_batch_sizes, key=lambda ibs: rates[name, ibs])
        for name in contenders
    }
    reference = measured[CAPTUM, best[CAPTUM]].output.detach()
    scale = float(reference.abs().max())
    rows = []
    for name, ibs in best.items():
        m, rate = measured[name, ibs], rates[name, ibs]
        diff = float((m.output.detach() - reference).abs().max())
        gflops = flops.per_evaluation * rate * k / 1e9
        by_size = {size: rates[name, size] for size in settings.internal_batch_sizes}
        rows.append(
            PlainRow(
                name, ibs, rate, rate / rates[CAPTUM, best[CAPTUM]], diff, diff / scale,
                m.peak_rss_mib, m.rss_growth_mib, gflops, 100 * gflops / flops.matmul_gflops,
                by_size,
            )
        )  # fmt: skip
    return rows, flops


# ------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class E2EResult:
    """Everything ``bench e2e`` measured; :meth:`to_dict` is the JSON output."""

    bundle: str
    threads: int
    settings: dict[str, Any]
    flops: FlopReport | None  # None without the plain part
    plain_ig: list[PlainRow]
    tangential: list[TangentialRow]
    tangent_space_images_per_s: float | None  # None without the tangential part
    scaling: list[ScalingCurve]
    goals: list[Goal]
    versions: dict[str, str]
    metrics: MetricsOverhead | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for curve, raw in zip(self.scaling, out["scaling"], strict=True):
            raw["statement"] = curve.statement()
        if self.metrics is not None:
            out["metrics"]["ratio"] = self.metrics.ratio
        return _finite(out)


def _finite(value: Any) -> Any:
    """NaN and infinities become None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def test_images(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The first ``n`` mnist-5k test digits (1x28x28, in [0, 1])."""
    from tig_batch.data import builtin_dataset, iter_batches

    if tuple(shape) != (1, 28, 28):
        raise ModelError(
            f"the bundle takes {'x'.join(map(str, shape))} images, but the benchmark explains "
            "mnist-5k test digits (1x28x28): give a bundle exported for mnist-5k"
        )
    batch = next(iter_batches(builtin_dataset("mnist-5k", "test"), n, labels=False))
    if len(batch) < n:
        raise ValueError(f"mnist-5k has only {len(batch)} test images; asked for {n}")
    return torch.as_tensor(batch.images)


def run_e2e(
    bundle: Path,
    settings: E2ESettings = E2ESettings(),
    threads: int | None = None,
    searches: Mapping[str, BaselineSearch] = SEARCHES,
    progress: Progress | None = None,
) -> E2EResult:
    """Run every measurement of ``bench e2e`` on ``bundle`` (see the module's docstring).

    ``threads`` sets torch's and ONNX Runtime's thread count for the run (restored after).
    """
    import onnxruntime

    say = progress or (lambda message: None)
    if "plain" in settings.parts:
        _captum_ig()  # fail before anything slow runs
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    runtime = Runtime("torch", threads=torch.get_num_threads())
    try:
        loaded = load_bundle(bundle, runtime)
        if loaded.manifest.explained_output != "logit":
            raise ModelError(
                f"{bundle} explains the {loaded.manifest.explained_output}; the benchmark (and "
                "Captum and the reference as run here) explain the logit: export with the default"
            )
        shape = tuple(loaded.manifest.input.shape)
        per_evaluation = gradient_flops(loaded.classifier.module, shape)  # type: ignore[attr-defined]
        images = test_images(max(settings.n_images, settings.reference_images), shape)
        target = loaded.classifier.logits(images).argmax(1)
        n = settings.n_images
        runtime = dataclasses.replace(runtime, backend="onnx")
        plain, flops, tang, tangent_rate, metrics = [], None, [], None, None
        if "plain" in settings.parts:
            say(
                f"plain IG: {settings.n_images} digits, {settings.repeats} rounds alternating "
                f"with a {settings.matmul_size}^3 float32 matrix product"
            )
            plain, flops = plain_ig(
                bundle, images[:n], target[:n], settings, runtime, per_evaluation
            )
        if "tangential" in settings.parts:
            tang, tangent_rate = tangential(
                bundle, images, target, settings, runtime, searches, say
            )
        if "metrics" in settings.parts:
            metrics = metrics_overhead(bundle, settings, runtime, say)
        curves = (
            []
            if settings.scaling is None
            else scaling_curves(bundle, settings.scaling, runtime, say)
        )
    finally:
        torch.set_num_threads(previous)
    versions = {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "captum": _captum_version(),
    }
    return E2EResult(
        str(bundle), runtime.threads, _settings_dict(settings, searches), flops, plain, tang,
        tangent_rate, curves, goals_met(plain, tang, metrics), versions, metrics,
    )  # fmt: skip


def _captum_version() -> str:
    import captum

    return str(captum.__version__)


def _settings_dict(settings: E2ESettings, searches: Mapping[str, BaselineSearch]) -> dict:
    out = dataclasses.asdict(settings)
    out["searches"] = {
        name: dataclasses.asdict(search_with_overrides(s, settings)) for name, s in searches.items()
    }
    return out
