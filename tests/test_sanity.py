"""The cascading model-randomisation check: explanations that ignore the weights fail it, the
gradient of a ReLU CNN passes."""

from __future__ import annotations

import pytest
import torch
from conftest import relu_cnn
from torch import nn

from tig_batch import Classifier, cascading_randomization, gradient, integrated_gradients


def _gradient(model: Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return gradient(model, inputs, target).attributions


def _edges(model: Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An "explanation" that never asks the model (Adebayo et al.'s edge detector, simplified)."""
    return inputs - inputs.mean(dim=(2, 3), keepdim=True)


class PositiveScale(nn.Module):
    """Multiplies every logit by one positive number: re-drawing it rescales every gradient
    map by a positive constant, which changes no rank."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.log_scale, -2.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()


def test_the_gradient_of_a_relu_cnn_passes(images: torch.Tensor) -> None:
    module = relu_cnn()
    before = [p.clone() for p in module.parameters()]
    result = cascading_randomization(module, images, _gradient, seed=1)
    assert result.layers == ("4", "0")  # the linear head, then the convolution
    assert result.spearman_abs.shape == (2, 4) and result.spearman.shape == (2, 4)
    assert result.passed().all()
    assert (result.spearman[-1].abs() < 0.5).all()
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    again = cascading_randomization(module, images, _gradient, seed=1)
    torch.testing.assert_close(again.spearman_abs, result.spearman_abs, rtol=0, atol=0)
    torch.testing.assert_close(result.target, module(images).argmax(1))


def test_an_explanation_that_ignores_the_model_fails(images: torch.Tensor) -> None:
    result = cascading_randomization(relu_cnn(), images, _edges)
    torch.testing.assert_close(result.spearman_abs, torch.ones(2, 4).double())
    assert not result.passed().any()


def test_a_layer_the_ranks_do_not_depend_on_fails_until_the_cascade_reaches_past_it(
    images: torch.Tensor,
) -> None:
    module = nn.Sequential(relu_cnn(), PositiveScale())
    top_only = cascading_randomization(module, images, _gradient, n_layers=1, seed=3)
    assert top_only.layers == ("1",)
    torch.testing.assert_close(top_only.spearman, torch.ones(1, 4).double())
    assert not top_only.passed().any()
    deeper = cascading_randomization(module, images, _gradient, n_layers=2, seed=3)
    assert deeper.layers == ("1", "0.4")
    torch.testing.assert_close(deeper.spearman_abs[0], top_only.spearman_abs[0])  # same draws
    assert deeper.passed().all()


def test_ig_runs_through_the_cascade_and_refusals(images: torch.Tensor) -> None:
    def ig(model: Classifier, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return integrated_gradients(model, inputs, 0.0, target, n_steps=8).attributions

    result = cascading_randomization(relu_cnn(), images, ig, target=2)
    assert result.target.tolist() == [2, 2, 2, 2]
    assert result.spearman.isfinite().all()
    with pytest.raises(ValueError, match=r"n_layers must be in \[1, 2\]"):
        cascading_randomization(relu_cnn(), images, ig, n_layers=3)

    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    with pytest.raises(ValueError, match="has no reset_parameters"):
        cascading_randomization(nn.Sequential(relu_cnn(), Frozen()), images, ig)
