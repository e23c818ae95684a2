"""The options of a run, grouped into decorators that each build one object of a Job.

``@runtime_options`` gives the command ``runtime``, ``@storage_options`` ``storage``,
``@selection_options`` ``selection``, ``@reference_options`` ``references`` and
``@scheduler_options`` ``scheduler``; the explanations' own options (``config``) are in
``_config_options``. Every default is read from the library's objects themselves, so each
setting has one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from tig_batch._references import ReferenceData
from tig_batch._selection import Selection
from tig_batch.backends import Runtime
from tig_batch.errors import TigBatchError
from tig_batch.job import Compression, Storage

F = TypeVar("F", bound=Callable[..., Any])

_RUNTIME, _STORAGE, _REFERENCES = Runtime(), Storage(), ReferenceData("")


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


def _references(reference_data: str | None, reference_limit: int) -> ReferenceData | None:
    return None if reference_data is None else ReferenceData(reference_data, reference_limit)


reference_options = option_group(
    "references", _references,
    click.option(
        "--reference-data", metavar="DATASET",
        help="expectedgrad: the images its base-points are drawn from, e.g. the training "
        "data (a shard file, a directory of shards, or a built-in name, meaning its train "
        "split: mnist-5k). Read once per run; outputs record their sha256.",
    ),
    click.option(
        "--reference-limit", type=click.IntRange(1), default=_REFERENCES.limit,
        show_default=True,
        help="expectedgrad: keep at most this many reference images in memory, evenly "
        "spaced over the dataset.",
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
