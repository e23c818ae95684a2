"""Integrated Gradients against Captum, closed forms, and the completeness gap."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from conftest import SHAPE, linear_model, relu_cnn, smooth_mlp

from tig_batch import RULES, TorchClassifier, integrated_gradients

CAPTUM_METHODS = {
    "left": "riemann_left",
    "right": "riemann_right",
    "midpoint": "riemann_middle",
    "gauss-legendre": "gausslegendre",
}


@pytest.mark.parametrize("method", sorted(CAPTUM_METHODS))
def test_matches_captum_per_image_and_per_target(method: str, images: torch.Tensor) -> None:
    model = relu_cnn()
    baselines = torch.rand(images.shape, generator=torch.Generator().manual_seed(2)).double()
    target = torch.tensor([0, 3, 1, 4])
    ours = integrated_gradients(
        TorchClassifier(model), images, baselines, target, n_steps=7, method=method,
        internal_batch_size=5,
    )  # fmt: skip
    theirs, delta = IntegratedGradients(model).attribute(
        images, baselines, target=target, n_steps=7, method=CAPTUM_METHODS[method],
        return_convergence_delta=True,
    )  # fmt: skip
    # Captum casts its quadrature weights to float32, hence agreement to ~1e-7, not 1e-15.
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.delta, delta, rtol=0, atol=1e-6)


def test_probability_output_matches_captum_on_the_softmax(images: torch.Tensor) -> None:
    model = smooth_mlp()
    ours = integrated_gradients(TorchClassifier(model, output="probability"), images, 0.0, 2)
    softmax = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    theirs = IntegratedGradients(softmax).attribute(
        images, torch.zeros_like(images), target=2, n_steps=50, method="riemann_middle"
    )
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("n_steps", [2, 5])
def test_exact_on_a_linear_model_at_any_n_steps(
    method: str, n_steps: int, images: torch.Tensor
) -> None:
    model = linear_model()
    weight = model[1].weight.detach()
    baselines = torch.full_like(images, 0.3)
    result = integrated_gradients(TorchClassifier(model), images, baselines, 3, n_steps, method)
    expected = (images - baselines) * weight[3].view(SHAPE)
    torch.testing.assert_close(result.attributions, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        result.delta, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0
    )


class SquaredNorm(torch.nn.Module):
    """Logit c is ``(c + 1) * sum x^2``, so IG from ``a`` is ``(c + 1) (x^2 - a^2)`` exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) ** 2).sum(1, keepdim=True) * torch.arange(1, 4, dtype=x.dtype)


@pytest.mark.parametrize("method", ["midpoint", "trapezoid", "gauss-legendre"])
def test_closed_form_on_a_quadratic(method: str, images: torch.Tensor) -> None:
    baselines = torch.rand(images.shape, generator=torch.Generator().manual_seed(3)).double()
    result = integrated_gradients(TorchClassifier(SquaredNorm()), images, baselines, 2, 3, method)
    torch.testing.assert_close(result.attributions, 3 * (images**2 - baselines**2))


@pytest.mark.parametrize("method", RULES)
def test_delta_shrinks_as_n_steps_grows_on_a_smooth_model(
    method: str, images: torch.Tensor
) -> None:
    model = TorchClassifier(smooth_mlp())
    deltas = [
        integrated_gradients(model, images, 0.0, 1, n, method).delta.abs().max().item()
        for n in (4, 16, 64)
    ]
    assert deltas[0] > deltas[1] > deltas[2]
    first_order = method in ("left", "right")  # error O(1/n); the others O(1/n^2) or better
    assert deltas[2] < (0.05 if first_order else 1e-3)


def test_chunking_does_not_change_the_result(images: torch.Tensor) -> None:
    model = TorchClassifier(relu_cnn())
    whole = integrated_gradients(model, images, 0.0, None, 9, "gauss-legendre", 10_000)
    for size in (1, 4, 9, 20):
        chunked = integrated_gradients(model, images, 0.0, None, 9, "gauss-legendre", size)
        torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=0, atol=1e-14)


def test_bounded_model_calls(images: torch.Tensor) -> None:
    seen: list[int] = []

    class Recording(TorchClassifier):
        def logits_and_grad(self, inputs, target):  # type: ignore[no-untyped-def]
            seen.append(inputs.shape[0])
            return super().logits_and_grad(inputs, target)

    integrated_gradients(Recording(relu_cnn()), images, 0.0, 0, n_steps=50, internal_batch_size=16)
    assert max(seen) <= 16
    assert sum(seen) == 4 * 50


def test_target_defaults_to_the_prediction_and_gap_is_reported(images: torch.Tensor) -> None:
    model = relu_cnn()
    result = integrated_gradients(TorchClassifier(model), images)
    logits = model(images).detach()
    torch.testing.assert_close(result.target, logits.argmax(1))
    picked = logits.gather(1, result.target[:, None]).squeeze(1)
    baseline_logits = model(torch.zeros_like(images)).detach()
    expected_gap = picked - baseline_logits.gather(1, result.target[:, None]).squeeze(1)
    torch.testing.assert_close(result.output_gap, expected_gap)


def test_float32_by_default_and_bad_targets_are_refused() -> None:
    model = relu_cnn().float()
    inputs = torch.rand(2, *SHAPE)
    assert integrated_gradients(TorchClassifier(model), inputs, n_steps=4).attributions.dtype == (
        torch.float32
    )
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        integrated_gradients(TorchClassifier(model), inputs, target=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        integrated_gradients(TorchClassifier(model), inputs, target=torch.tensor([0.5, 1.0]))
