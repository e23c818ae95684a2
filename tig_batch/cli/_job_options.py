"""The options of a run, grouped into decorators that each build one object of a Job.

``@config_options`` gives the command ``config`` (an :class:`ExplainConfig` with its
``BaselineSearch``), ``@runtime_options`` ``runtime``, ``@storage_options`` ``storage``,
``@selection_options`` ``selection`` and ``@scheduler_options`` ``scheduler``. Every default
is read from the library's objects themselves, so each setting has one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from tig_batch._selection import Selection
from tig_batch.backends import Runtime
from tig_batch.engine import OPTIMIZERS, RULES, BaselineSearch
from tig_batch.errors import TigBatchError
from tig_batch.job import Compression, Storage
from tig_batch.pipeline import METHODS, ExplainConfig

F = TypeVar("F", bound=Callable[..., Any])

_CONFIG, _SEARCH, _RUNTIME, _STORAGE = ExplainConfig(), BaselineSearch(), Runtime(), Storage()


def option_group(
    name: str, build: Callable[..., Any], *options: Callable[[F], F]
) -> Callable[[F], F]:
    """A decorator adding ``options`` to a command, which receives ``name=build(**values)``
    instead of their values. A ``ValueError`` of ``build`` is a usage error; both exit with 2."""

    def decorator(command: F) -> F:
        keys: list[str] = []

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in keys}
            try:
                kwargs[name] = build(**values)
            except TigBatchError:
                raise  # a data or model error: one line, as every command shows them
            except ValueError as error:
                raise click.UsageError(str(error)) from None
            return command(*args, **kwargs)

        before = len(wrapper.__dict__.get("__click_params__", []))
        for option in reversed(options):
            option(wrapper)
        keys.extend(p.name for p in wrapper.__dict__["__click_params__"][before:])
        return cast(F, wrapper)

    return decorator


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if not chosen:
        raise click.BadParameter(f"give at least one method; choose from {','.join(METHODS)}")
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {','.join(METHODS)}")
    return chosen


def _target(ctx: click.Context, param: click.Parameter, value: str) -> str | int:
    if value in ("predicted", "label"):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter("predicted, label, or a class index") from None


def _config(**values: Any) -> ExplainConfig:
    """The configuration the flags give: the ``search_*`` ones build its ``BaselineSearch``."""
    search = {k[len("search_") :]: values.pop(k) for k in list(values) if k.startswith("search_")}
    optimizer, gradient = search["optimizer"], search["gradient"]
    if optimizer != "ascent" and (gradient == "exact" or search["adaptive_lr"]):
        flag = "--search-gradient exact" if gradient == "exact" else "--search-adaptive-lr"
        raise click.UsageError(
            f"{flag} applies to ascent steps; add --search-optimizer ascent ({optimizer} "
            "steps use the frozen path gradient and no step length)"
        )
    return ExplainConfig(search=BaselineSearch(**search), **values)


_SEARCH_OPTIONS = (
    click.option(
        "--search-gradient", "search_gradient", type=click.Choice(["frozen-path", "exact"]),
        default=_SEARCH.gradient, show_default=True,
        help="Gradient of mu in the base-point search (exact needs --backend torch).",
    ),
    click.option(
        "--search-optimizer", "search_optimizer", type=click.Choice(OPTIMIZERS),
        default=_SEARCH.optimizer, show_default=True,
        help="surrogate: each step maximises mu on the frozen-path model of IG under the value "
        "range and the --min-gap constraint, then moves --search-damping of the way. ascent: "
        "the paper's gradient ascent on mu. projection: closed-form steps to the tangential "
        "part of the explanation, blind to the gap (docs/method.md).",
    ),
    click.option(
        "--search-iterations", "search_n_iterations", type=click.IntRange(0),
        default=_SEARCH.n_iterations, show_default=True, help="Steps of the base-point search.",
    ),
    click.option(
        "--search-lr", "search_lr", type=click.FloatRange(min=0), default=_SEARCH.lr,
        show_default=True, help="Ascent step length (l2, in pixel units).",
    ),
    click.option(
        "--search-adaptive-lr", "search_adaptive_lr", is_flag=True,
        help="Per-image ascent step lengths: longer after a step that raised mu, shorter after "
        "one that lowered it.",
    ),
    click.option(
        "--search-damping", "search_damping", type=click.FloatRange(0, 1, min_open=True),
        default=_SEARCH.damping, show_default=True,
        help="surrogate and projection: the fraction of the way to the step's solution moved.",
    ),
    click.option(
        "--search-inner-iterations", "search_inner_iterations", type=click.IntRange(0),
        default=_SEARCH.inner_iterations, show_default=True,
        help="surrogate: ascent steps on the frozen-path problem per search step (no model "
        "calls).",
    ),
    click.option(
        "--search-anneal", "search_anneal", type=click.FloatRange(0, 1), default=_SEARCH.anneal,
        show_default=True,
        help="surrogate: the share of the steps over which the gap aimed for falls from the "
        "zero base-point's to --min-gap (0: aim for --min-gap at once).",
    ),
    click.option(
        "--search-n-steps", "search_n_steps", type=click.IntRange(1), default=_SEARCH.n_steps,
        show_default=True,
        help="Quadrature nodes inside the search (the final IG uses --n-steps): the search "
        "only ranks base-points, so a coarse rule suffices (docs/method.md).",
    ),
    click.option(
        "--target-mu", "search_target_mu", type=click.FloatRange(0, 1),
        help="Stop an image's search once its mu reaches this.",
    ),
    click.option(
        "--min-gap", "search_min_gap", type=click.FloatRange(0, 1, max_open=True),
        default=_SEARCH.min_gap, show_default=True,
        help="The share of the zero base-point's output gap f_c(x) - f_c(0) that a tangential "
        "base-point must keep, so its explanation still accounts for the output. 0 is the "
        "paper's unconstrained problem: higher mu, but base-points next to the input and "
        "near-blank explanations.",
    ),
)  # fmt: skip

# The explanations: methods, quadrature, target, seed, each method's settings and the
# base-point search's; the command receives ``config``.
config_options = option_group(
    "config", _config,
    click.option(
        "--methods", default=",".join(_CONFIG.methods), show_default=True,
        callback=_methods, help="Comma-separated methods.",
    ),
    click.option(
        "--method", type=click.Choice(RULES), default=_CONFIG.method, show_default=True,
        help="IG quadrature rule.",
    ),
    click.option(
        "--n-steps", type=click.IntRange(1), default=_CONFIG.n_steps, show_default=True,
        help="IG quadrature nodes for the attributions.",
    ),
    click.option(
        "--target", default=_CONFIG.target, show_default=True, callback=_target,
        help="predicted, label (from the shard), or a class index.",
    ),
    click.option(
        "--seed", type=int, default=_CONFIG.seed, show_default=True,
        help="Seed of the random base-points, SmoothGrad and a random search start.",
    ),
    click.option(
        "--gaussian-sigma", type=click.FloatRange(min=0), default=_CONFIG.gaussian_sigma,
        show_default=True,
    ),
    click.option(
        "--blur-sigma", type=click.FloatRange(min=0), default=_CONFIG.blur_sigma,
        show_default=True, help="In pixels.",
    ),
    click.option(
        "--smoothgrad-sigma", type=click.FloatRange(min=0),
        default=_CONFIG.smoothgrad_sigma, show_default=True,
    ),
    click.option(
        "--smoothgrad-samples", type=click.IntRange(1), default=_CONFIG.smoothgrad_samples,
        show_default=True,
    ),
    click.option(
        "--on-bad-image", type=click.Choice(["error", "skip"]),
        default=_CONFIG.on_bad_image, show_default=True,
        help="Images with NaN/Inf pixels: stop, or flag and skip them.",
    ),
    *_SEARCH_OPTIONS,
)  # fmt: skip

runtime_options = option_group(
    "runtime", Runtime,
    click.option(
        "--backend", type=click.Choice(["onnx", "torch"]), default=_RUNTIME.backend,
        show_default=True, help="ONNX Runtime graphs from the bundle, or the torch reference.",
    ),
    click.option(
        "--device", default=_RUNTIME.device, show_default=True,
        help="cpu, or cuda[:N] (Triton kernels and the ONNX CUDA provider).",
    ),
    click.option(
        "--threads", type=click.IntRange(1), help="CPU threads for torch and ONNX Runtime."
    ),
    click.option(
        "--graph-optimization", type=click.Choice(["disable", "basic", "extended", "all"]),
        default=_RUNTIME.graph_optimization, show_default=True,
        help="ONNX Runtime graph optimisation level.",
    ),
    click.option(
        "--internal-batch-size", type=click.IntRange(1), default=_RUNTIME.internal_batch_size,
        show_default=True, help="Samples (images x nodes) per model call.",
    ),
)  # fmt: skip


def _storage(**values: Any) -> Storage:
    compression = values.pop("compression")
    return Storage(
        compression=None if compression == "none" else cast(Compression, compression), **values
    )


storage_options = option_group(
    "storage", _storage,
    click.option(
        "--batch-size", type=click.IntRange(1), default=_STORAGE.batch_size, show_default=True,
        help="Images explained and committed together (memory, progress and resume unit).",
    ),
    click.option(
        "--dtype", type=click.Choice(["float32", "float16"]), default=_STORAGE.dtype,
        show_default=True, help="Storage dtype of attributions and base-points.",
    ),
    click.option(
        "--compression", type=click.Choice(["gzip", "lzf", "none"]),
        default=_STORAGE.compression or "none", show_default=True,
    ),
    click.option(
        "--overwrite", is_flag=True, help="Replace outputs made with another configuration."
    ),
)  # fmt: skip


selection_options = option_group(
    "selection", Selection.parse,
    click.option(
        "--ids", metavar="IDS",
        help="Explain only the images with these ids: a comma list of ids and ranges, e.g. "
        "--ids 0-99,250,cat/001.png (ids are the inputs' stored ids, or an image's position "
        "in its dataset when none are stored, as in the outputs and the report).",
    ),
    click.option(
        "--limit", type=click.IntRange(1),
        help="Explain only the first N images of the inputs (after --ids).",
    ),
)  # fmt: skip


def _scheduler(scheduler: str, dask_address: str | None, workers: int | None) -> Any:
    if scheduler == "local":
        if dask_address or workers:
            raise click.UsageError("--dask-address and --workers go with --scheduler dask")
        return None
    if (dask_address is None) == (workers is None):
        raise click.UsageError("--scheduler dask needs --dask-address or --workers (one of them)")
    from tig_batch.distributed import DaskScheduler

    return DaskScheduler(address=dask_address, n_workers=workers)


scheduler_options = option_group(
    "scheduler", _scheduler,
    click.option(
        "--scheduler", type=click.Choice(["local", "dask"]), default="local", show_default=True,
        help="Shard by shard in this process, or one Dask task per shard (pip install "
        "'tig-batch[dask]').",
    ),
    click.option(
        "--dask-address", metavar="tcp://HOST:PORT",
        help="With --scheduler dask: a running Dask scheduler (workers must see the same "
        "paths).",
    ),
    click.option(
        "--workers", type=click.IntRange(1),
        help="With --scheduler dask: start a local cluster of N worker processes instead "
        "(--threads then defaults to cores/N).",
    ),
)  # fmt: skip
