"""The model-randomisation check of a bundle on a dataset: what ``tig-batch sanity`` runs.

The files around :func:`tig_batch.sanity.cascading_randomization`: the inputs are read and
checked against the bundle as ``explain`` reads and checks them (the same :func:`plan`), the
bundle's torch classifier is randomised from the top, and every chosen method is re-run with
the settings ``explain`` would give it (:func:`explain_method`, the same per-image seeds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tig_batch._bundle import read_manifest
from tig_batch._methods import explain_method
from tig_batch._references import ReferenceData
from tig_batch._selection import Selection
from tig_batch.backends import Bundle, Classifier, Manifold, Runtime, load_bundle, model_name
from tig_batch.data import Batch, iter_rows
from tig_batch.engine import Explainer, TangentSpace, tangent_space
from tig_batch.errors import ModelError
from tig_batch.job import Job, Plan, Storage, plan
from tig_batch.pipeline import ExplainConfig
from tig_batch.sanity import (
    DEFAULT_SANITY_THRESHOLD,
    SanityResult,
    cascading_randomization,
    parametrised_layers,
)

OnExplained = Callable[[int, int], None]
"""``on_explained(n, total)``: ``n`` more images explained, of ``total`` image explanations
(each method's original and one per cascade step)."""


@dataclass(frozen=True)
class SanityCheck:
    """Every chosen method's cascade over the selected images of a dataset.

    ``layers``: the classifier's layers re-initialised, top first (step ``k`` has the first
    ``k + 1`` randomised). ``ids`` and ``target`` (B,): the images, as explain outputs name
    them, and the classes explained. ``spearman_abs`` and ``spearman``: method -> (steps, B)
    rank correlations of ``|attributions|`` and of the signed maps with the original ones.
    """

    bundle: Path
    config: ExplainConfig
    layers: tuple[str, ...]
    ids: tuple[str, ...]
    target: np.ndarray = field(repr=False)
    spearman_abs: dict[str, np.ndarray] = field(repr=False)
    spearman: dict[str, np.ndarray] = field(repr=False)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.spearman_abs)

    def passed(self, method: str, threshold: float = DEFAULT_SANITY_THRESHOLD) -> np.ndarray:
        """(B,) True where, with every listed layer randomised, ``method``'s rank correlation
        has fallen below ``threshold`` (as :meth:`SanityResult.passed`; NaN does not pass)."""
        return self.spearman_abs[method][-1] < threshold

    def method_passes(self, method: str, threshold: float = DEFAULT_SANITY_THRESHOLD) -> bool:
        """Whether more than half of the images pass: the method's explanations, as a rule,
        depend on what the classifier learned."""
        return 2 * int(self.passed(method, threshold).sum()) > len(self.ids)


def sanity_check(
    bundle: Path | str,
    inputs: tuple[str | Path, ...] | str | Path,
    config: ExplainConfig | None = None,
    selection: Selection | None = None,
    references: ReferenceData | None = None,
    n_layers: int | None = None,
    batch_size: int = Storage().batch_size,
    on_explained: OnExplained | None = None,
) -> SanityCheck:
    """Randomise the top ``n_layers`` layers of ``bundle``'s classifier (all with parameters by
    default) one more at a time and compare each of ``config.methods``' explanations of the
    selected images with the original ones.

    The inputs, the selection and the configuration are checked exactly as ``explain`` checks
    them; ``config.seed`` seeds the methods as in ``explain`` and the re-drawn layers (so every
    batch of ``batch_size`` images sees the same randomised classifier). The bundle must carry
    its torch models. ``on_explained(n, total)`` hears of each batch's explanations as they
    are made.
    """
    job = Job(
        Path(bundle), inputs, Path(), config or ExplainConfig(), Runtime("torch"),
        Storage(batch_size=batch_size), selection or Selection(), references,
    )  # fmt: skip  # the output directory is never opened: a sanity check writes no outputs
    planned = plan(job)
    loaded = _open_torch_bundle(planned)
    layers = _check_layers(planned.job.bundle, loaded, n_layers)
    total = planned.n_images * len(planned.job.config.methods) * (len(layers) + 1)

    def explained(n: int) -> None:
        if on_explained:
            on_explained(n, total)

    parts = [
        _check_batch(planned, loaded, batch, sample_ids, n_layers, explained)
        for batch, sample_ids in _batches(planned)
    ]
    return SanityCheck(
        planned.job.bundle, planned.job.config, layers,
        tuple(i for part in parts for i in part.ids),
        np.concatenate([part.target for part in parts]),
        _joined(parts, "spearman_abs"), _joined(parts, "spearman"),
    )  # fmt: skip


@dataclass(frozen=True)
class _Part:
    """One batch's results: its images' ids, per method its cascade, and the targets they
    share."""

    ids: tuple[str, ...]
    target: np.ndarray
    spearman_abs: dict[str, np.ndarray]
    spearman: dict[str, np.ndarray]


def _joined(parts: list[_Part], name: str) -> dict[str, np.ndarray]:
    """One method -> (steps, B) mapping from the batches' ``name`` field."""
    methods = getattr(parts[0], name)
    return {m: np.concatenate([getattr(p, name)[m] for p in parts], axis=1) for m in methods}


def _open_torch_bundle(planned: Plan) -> Bundle:
    """The bundle with its torch models: the only ones whose weights can be re-drawn."""
    path = planned.job.bundle
    if not {"classifier", "autoencoder"} <= set(read_manifest(path).torch_models):
        raise ModelError(
            f"{path}: this bundle carries no torch models, and the sanity check re-draws the "
            "classifier's weights; export it with `tig-batch export` from checkpoints (or "
            "--model with --weights), which keeps them"
        )
    return load_bundle(path, planned.job.runtime)


def _check_layers(bundle: Path, loaded: Bundle, n_layers: int | None) -> tuple[str, ...]:
    """The names of the layers to re-draw, top first; a layer count the classifier does not
    have, or a layer with no initialiser, is refused naming the bundle."""
    layers = parametrised_layers(_module(loaded.classifier))
    if n_layers is not None and not 1 <= n_layers <= len(layers):
        raise ModelError(
            f"{bundle}: the classifier has {len(layers)} layers with parameters; randomise "
            f"1 to {len(layers)} of them (--layers), not {n_layers}"
        )
    chosen = layers[::-1][: n_layers or len(layers)]
    for name, layer in chosen:
        if not callable(getattr(layer, "reset_parameters", None)):
            raise ModelError(
                f"{bundle}: the classifier's layer {name!r} ({type(layer).__name__}) has no "
                "reset_parameters() to re-draw it with; randomise fewer layers (--layers)"
            )
    return tuple(name for name, _ in chosen)


def _module(classifier: Classifier) -> torch.nn.Module:
    module = getattr(classifier, "module", None)
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{model_name(classifier)}: the sanity check needs a torch classifier")
    return module


def _batches(planned: Plan) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Every selected image's batch, with the ids that seed its methods in ``explain``."""
    job = planned.job
    for task in planned.tasks:
        rows = np.arange(task.count) if task.rows is None else task.rows
        for batch in iter_rows(
            task.dataset, task.shard, rows, job.storage.batch_size, offset=task.first_id
        ):
            yield batch, task.first_id + torch.as_tensor(batch.rows, dtype=torch.long)


def _check_batch(
    planned: Plan,
    loaded: Bundle,
    batch: Batch,
    sample_ids: torch.Tensor,
    n_layers: int | None,
    explained: Callable[[int], None],
) -> _Part:
    """Every method's cascade on one batch."""
    config, runtime = planned.job.config, planned.job.runtime
    images = torch.as_tensor(batch.images, device=runtime.device)
    target = _target(config, batch, runtime.device)
    tangent = None
    if "tangential" in config.methods:
        tangent = tangent_space(loaded.manifold, images, config.rtol)
    references = None
    if planned.references is not None:
        references = torch.as_tensor(planned.references.images, device=runtime.device)
    results: dict[str, SanityResult] = {}
    for name in config.methods:
        explain = _explainer(
            name, loaded.manifold, sample_ids, config, runtime.internal_batch_size,
            references, tangent, explained,
        )  # fmt: skip
        results[name] = cascading_randomization(
            _module(loaded.classifier), images, explain, target, n_layers, config.seed,
            loaded.manifest.explained_output,
        )  # fmt: skip
        target = results[name].target  # resolved once, shared by every method
    first = next(iter(results.values()))
    return _Part(
        tuple(str(i) for i in batch.ids),
        first.target.cpu().numpy(),
        {name: r.spearman_abs.cpu().numpy() for name, r in results.items()},
        {name: r.spearman.cpu().numpy() for name, r in results.items()},
    )


def _target(config: ExplainConfig, batch: Batch, device: str) -> torch.Tensor | int | None:
    """The classes to explain as ``config.target`` names them (None: the prediction)."""
    if config.target == "predicted":
        return None
    if config.target == "label":
        return torch.as_tensor(batch.labels, dtype=torch.long, device=device)
    return int(config.target)


def _explainer(
    name: str,
    manifold: Manifold,
    sample_ids: torch.Tensor,
    config: ExplainConfig,
    internal_batch_size: int,
    references: torch.Tensor | None,
    tangent: TangentSpace | None,
    explained: Callable[[int], None],
) -> Explainer:
    """``name`` as ``explain`` runs it, reporting each batch it explains."""

    def run(model: Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        result, _ = explain_method(
            name, model, manifold, inputs, target, sample_ids, config, internal_batch_size,
            references, tangent,
        )  # fmt: skip
        explained(len(inputs))
        return result.attributions

    return run
