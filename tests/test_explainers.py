"""Gradient explainers against Captum, autograd and closed forms."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, Saliency
from conftest import linear_model, relu_cnn, smooth_mlp

from tig_batch import TorchClassifier, gradient, input_x_gradient, smoothgrad


def test_gradient_and_input_x_gradient_match_captum(images: torch.Tensor) -> None:
    model = relu_cnn()
    target = torch.tensor([1, 0, 4, 2])
    ours = gradient(TorchClassifier(model), images, target, internal_batch_size=3)
    torch.testing.assert_close(
        ours.attributions, Saliency(model).attribute(images, target=target, abs=False)
    )
    ixg = input_x_gradient(TorchClassifier(model), images, target)
    torch.testing.assert_close(
        ixg.attributions, InputXGradient(model).attribute(images, target=target)
    )


def test_smoothgrad_of_a_linear_model_is_its_weight(images: torch.Tensor) -> None:
    model = linear_model()
    result = smoothgrad(TorchClassifier(model), images, 2, sigma=0.3, n_samples=7)
    expected = model[1].weight.detach()[2].view(1, 1, 8, 8).expand_as(images)
    torch.testing.assert_close(result.attributions, expected)


class SquaredNorm(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) ** 2).sum(1, keepdim=True).repeat(1, 2)


def test_smoothgrad_of_a_quadratic_averages_to_its_gradient(images: torch.Tensor) -> None:
    result = smoothgrad(TorchClassifier(SquaredNorm()), images, 0, sigma=0.02, n_samples=400)
    # E[2 (x + e)] = 2x; the mean of 400 draws has standard deviation 0.04 / 20 = 0.002.
    torch.testing.assert_close(result.attributions, 2 * images, rtol=0, atol=0.01)
    assert not torch.equal(result.attributions, 2 * images)


def test_smoothgrad_is_seeded_per_image(images: torch.Tensor) -> None:
    """An image's noise depends on its id, not on the batch it arrives in: bit for bit where
    the model is elementwise (its gradient is ``2 (x + e)``), and within float64 rounding
    through a matrix product, which BLAS blocks differently for other batch sizes."""
    for model, tolerance in ((SquaredNorm(), 0.0), (smooth_mlp(), 1e-12)):
        classifier = TorchClassifier(model)
        whole = smoothgrad(classifier, images, 1, sigma=0.5, n_samples=5, seed=7).attributions
        again = smoothgrad(
            classifier, images[2:3], 1, sigma=0.5, n_samples=5, seed=7,
            sample_ids=torch.tensor([2]),
        )  # fmt: skip
        torch.testing.assert_close(again.attributions, whole[2:3], rtol=tolerance, atol=tolerance)
        other = smoothgrad(classifier, images, 1, sigma=0.5, n_samples=5, seed=8).attributions
        assert not torch.allclose(other, whole)


def test_smoothgrad_needs_samples(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        smoothgrad(TorchClassifier(relu_cnn()), images, n_samples=0)
