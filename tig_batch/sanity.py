"""The model-randomisation sanity check (Adebayo et al. 2018), cascading from the top.

An explanation that stays the same when the classifier's top layers are replaced by random
ones says nothing about what the classifier learned. This re-initialises the layers of a torch
classifier from the top down (the last layer, then the last two, ...), re-runs an explainer
after each step and reports the rank correlation with the original explanation per image.

It lives outside the engine because it must rewrite a framework model's weights: the engine
sees models only through the :class:`Classifier` protocol, which has no weights (an ONNX
bundle's are baked into its graphs). The explanations themselves still go through the
protocol, via :class:`TorchClassifier`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tig_batch.backends import ExplainedOutput, TorchClassifier
from tig_batch.engine._ig import Target, resolve_target
from tig_batch.engine._metrics import Explainer, rank_correlation

DEFAULT_SANITY_THRESHOLD = 0.5


@dataclass(frozen=True)
class SanityResult:
    """Per cascade step (top layer first) and image: Spearman's rank correlation between the
    original explanation and the one on the randomised classifier.

    ``layers``: the names of the layers re-initialised, in the order they were (step ``k`` has
    the first ``k + 1`` randomised). ``spearman_abs`` (steps, B) compares ``|attributions|``
    (which features matter), ``spearman`` (steps, B) the signed maps. ``target`` (B,): the
    classes explained, fixed to the original model's.
    """

    layers: tuple[str, ...]
    spearman_abs: torch.Tensor
    spearman: torch.Tensor
    target: torch.Tensor

    def passed(self, threshold: float = DEFAULT_SANITY_THRESHOLD) -> torch.Tensor:
        """(B,) True where, with every listed layer randomised, the rank correlation of
        ``|attributions|`` has fallen below ``threshold``: the explanation depends on the
        weights. NaN (a constant map) does not pass."""
        return self.spearman_abs[-1] < threshold


def parametrised_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The submodules that hold parameters of their own, in registration (forward) order."""
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if any(True for _ in layer.parameters(recurse=False))
    ]


def _reinitialise(layer: nn.Module, name: str, seed: int) -> None:
    """Draw the layer's parameters afresh with its own initialiser, seeded, leaving torch's
    global random state as it was."""
    reset = getattr(layer, "reset_parameters", None)
    if not callable(reset):
        raise ValueError(
            f"layer {name!r} ({type(layer).__name__}) has no reset_parameters(); "
            "randomise fewer layers (n_layers) or give it one"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            reset()


def cascading_randomization(
    module: nn.Module,
    inputs: torch.Tensor,
    explain: Explainer,
    target: Target = None,
    n_layers: int | None = None,
    seed: int = 0,
    output: ExplainedOutput = "logit",
) -> SanityResult:
    """Re-initialise the top ``n_layers`` parametrised layers of ``module`` one more at a time
    (all of them by default) and compare ``explain``'s maps with the original ones.

    ``explain(model, inputs, target)`` is any explainer (see ``Explainer``); it gets a
    :class:`TorchClassifier` of the original, then of each randomised copy (``module`` itself
    is never modified). Layer ``i`` (counted from the top) is re-drawn by its own
    ``reset_parameters()`` under seed ``seed + i``, so a step's weights do not depend on
    ``n_layers``. Targets default to the original model's predictions and stay fixed.
    """
    layers = parametrised_layers(module)
    n_layers = len(layers) if n_layers is None else n_layers
    if not 1 <= n_layers <= len(layers):
        raise ValueError(f"n_layers must be in [1, {len(layers)}], got {n_layers}")
    original = TorchClassifier(module, output)
    target = resolve_target(original, inputs, target)
    reference = explain(original, inputs, target)
    randomised = copy.deepcopy(module)
    copies = dict(randomised.named_modules())
    names, signed, absolute = [], [], []
    for i, (name, _) in enumerate(reversed(layers[-n_layers:])):
        _reinitialise(copies[name], name, seed + i)
        maps = explain(TorchClassifier(randomised, output), inputs, target)
        names.append(name)
        signed.append(rank_correlation(reference, maps))
        absolute.append(rank_correlation(reference.abs(), maps.abs()))
    return SanityResult(tuple(names), torch.stack(absolute), torch.stack(signed), target)
