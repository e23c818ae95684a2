"""Infidelity, max-sensitivity, sparseness and rank correlation against Captum, Quantus, scipy
and closed forms, on the same inputs and the same perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from conftest import SHAPE, D, linear_model, relu_cnn
from scipy.stats import spearmanr

from tig_batch import (
    TorchClassifier,
    gradient,
    infidelity,
    integrated_gradients,
    sensitivity_max,
    sparseness,
)
from tig_batch.engine import (
    infidelities,
    infidelity_perturbations,
    rank_correlation,
    sensitivity_perturbations,
)

TARGET = torch.tensor([1, 0, 4, 2])


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum_on_the_same_perturbations(
    normalize: bool, images: torch.Tensor
) -> None:
    module = relu_cnn()
    model = TorchClassifier(module)
    attributions = integrated_gradients(model, images, 0.0, TARGET, n_steps=8).attributions
    n = 6
    ours = infidelity(
        model, images, attributions, TARGET, sigma=0.2, n_perturb_samples=n,
        normalize=normalize, seed=3, internal_batch_size=7,
    )  # fmt: skip
    noise = infidelity_perturbations(images, 0.2, n, seed=3)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert inputs.shape[0] == 4 * n  # one call, image-major, as our draws are laid out
        return noise, inputs - noise

    theirs = captum_infidelity(
        module, perturb, images, attributions, target=TARGET, n_perturb_samples=n,
        normalize=normalize,
    )  # fmt: skip
    # same float64 arithmetic in another order (Captum expands (a - b)^2 when normalising)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert (ours > 0).all()


def test_infidelity_closed_form_on_a_linear_model(images: torch.Tensor) -> None:
    module = linear_model()
    model = TorchClassifier(module)
    weight = module[1].weight.detach()[3].view(SHAPE)
    # the gradient is the model: f(x) - f(x - I) = w . I exactly, so infidelity vanishes
    exact = infidelity(model, images, weight.expand_as(images), 3, sigma=0.3, seed=1)
    torch.testing.assert_close(exact, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-24)
    # x * w (IG from zero) misses by I . ((x - 1) w)
    ours = infidelity(model, images, images * weight, 3, sigma=0.3, n_perturb_samples=5, seed=1)
    noise = infidelity_perturbations(images, 0.3, 5, seed=1).view(4, 5, D).numpy()
    miss = ((images - 1) * weight).view(4, 1, D).numpy()
    expected = ((noise * miss).sum(2) ** 2).mean(1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_infidelity_perturbations_are_gaussian_and_seeded_per_image() -> None:
    inputs = torch.zeros(3, 1, 30, 30, dtype=torch.float64)
    noise = infidelity_perturbations(inputs, sigma=0.5, n_perturb_samples=20, seed=2)
    assert noise.shape == (60, 1, 30, 30)
    assert abs(noise.std().item() - 0.5) < 0.01  # 54,000 draws: standard error 0.0015
    assert abs(noise.mean().item()) < 0.01
    one = infidelity_perturbations(inputs[:1], 0.5, 20, 2, sample_ids=torch.tensor([2]))
    torch.testing.assert_close(one, noise[40:], rtol=0, atol=0)
    assert not torch.equal(infidelity_perturbations(inputs, 0.5, 20, seed=3), noise)


def test_metric_noise_is_not_smoothgrads_noise() -> None:
    from tig_batch.engine._baselines import seeded_noise

    inputs = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    plain = seeded_noise(inputs.repeat_interleave(3, 0), 0, torch.arange(6), "normal")
    assert not torch.allclose(infidelity_perturbations(inputs, 1.0, 3, seed=0), plain)


def test_infidelity_does_not_depend_on_the_batch(images: torch.Tensor) -> None:
    model = TorchClassifier(relu_cnn())
    attributions = gradient(model, images, TARGET).attributions
    whole = infidelity(model, images, attributions, TARGET, seed=5, internal_batch_size=1000)
    for size in (1, 7, 25):
        split = infidelity(model, images, attributions, TARGET, seed=5, internal_batch_size=size)
        torch.testing.assert_close(split, whole, rtol=1e-12, atol=0)
    alone = infidelity(
        model, images[2:3], attributions[2:3], TARGET[2:3], seed=5, sample_ids=torch.tensor([2])
    )
    # the noise is identical; the model's sums may round differently in another batch size
    torch.testing.assert_close(alone, whole[2:3], rtol=1e-12, atol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelities_share_the_perturbations_and_give_each_its_own_score(
    normalize: bool, images: torch.Tensor
) -> None:
    model = TorchClassifier(relu_cnn())
    maps = {
        "gradient": gradient(model, images, TARGET).attributions,
        "ig": integrated_gradients(model, images, 0.0, TARGET, n_steps=8).attributions,
    }
    calls = []
    logits = model.logits
    model.logits = lambda x: calls.append(len(x)) or logits(x)  # type: ignore[method-assign]
    shared = infidelities(model, images, maps, TARGET, 0.2, 6, normalize, seed=3)
    assert sum(calls) == 4 + 4 * 6  # f(x) and the perturbed inputs, once for both maps
    model.logits = logits  # type: ignore[method-assign]
    for name, value in maps.items():
        alone = infidelity(model, images, value, TARGET, 0.2, 6, normalize, seed=3)
        torch.testing.assert_close(shared[name], alone, rtol=0, atol=0)


@pytest.mark.parametrize("explainer", ["gradient", "ig"])
def test_sensitivity_max_matches_captum_on_the_same_perturbations(
    explainer: str, images: torch.Tensor
) -> None:
    module = relu_cnn()
    model = TorchClassifier(module)
    n = 5
    if explainer == "gradient":

        def ours_explain(m, x, t):  # type: ignore[no-untyped-def]
            return gradient(m, x, t).attributions

        def captum_explain(inputs, target):  # type: ignore[no-untyped-def]
            return Saliency(module).attribute(inputs, target=target, abs=False)

        tolerance = {"rtol": 1e-12, "atol": 1e-14}
    else:

        def ours_explain(m, x, t):  # type: ignore[no-untyped-def]
            return integrated_gradients(m, x, 0.0, t, n_steps=8).attributions

        def captum_explain(inputs, target):  # type: ignore[no-untyped-def]
            return IntegratedGradients(module).attribute(
                inputs, target=target, n_steps=8, method="riemann_middle"
            )

        # Captum casts its IG weights to float32 (see test_ig.py): agreement to ~1e-7
        tolerance = {"rtol": 1e-6, "atol": 1e-9}
    attributions = ours_explain(model, images, TARGET)
    ours = sensitivity_max(
        model, ours_explain, images, attributions, TARGET, radius=0.05, n_perturb_samples=n,
        seed=1, internal_batch_size=12,
    )  # fmt: skip
    noise = sensitivity_perturbations(images, 0.05, n, seed=1)

    def perturb(inputs: torch.Tensor, radius: float) -> torch.Tensor:
        assert inputs.shape[0] == 4 * n and radius == 0.05
        return inputs + noise

    theirs = captum_sensitivity_max(
        captum_explain, images, perturb, perturb_radius=0.05, n_perturb_samples=n, target=TARGET
    )
    torch.testing.assert_close(ours, theirs, **tolerance)
    assert (ours > 0).all()


def test_sensitivity_perturbations_fill_the_linf_ball_and_calls_are_bounded(
    images: torch.Tensor,
) -> None:
    noise = sensitivity_perturbations(torch.zeros(2, 1, 40, 40), 0.1, 10, seed=0)
    assert noise.abs().max() <= 0.1 and noise.abs().max() > 0.099
    assert abs(noise.mean().item()) < 0.002  # 32,000 draws, standard deviation 0.058
    calls: list[int] = []

    def explain(m, x, t):  # type: ignore[no-untyped-def]
        calls.append(x.shape[0])
        return gradient(m, x, t).attributions

    model = TorchClassifier(linear_model())
    attributions = gradient(model, images, 2).attributions
    result = sensitivity_max(model, explain, images, attributions, 2, n_perturb_samples=3,
                             internal_batch_size=7)  # fmt: skip
    assert calls == [6, 6]  # two images (6 perturbed inputs) per call
    # a linear model's gradient does not move
    torch.testing.assert_close(result, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-15)


def test_sparseness_matches_quantus_and_closed_forms(images: torch.Tensor) -> None:
    quantus = pytest.importorskip("quantus")
    attributions = integrated_gradients(TorchClassifier(relu_cnn()), images, 0.0, TARGET, 8)
    a = attributions.attributions
    ours = sparseness(a)
    theirs = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)(
        model=None, x_batch=images.numpy(), y_batch=TARGET.numpy(), a_batch=a.numpy()
    )
    # Quantus adds 1e-7 to each of the d values: the numerator's weights sum to zero, so its
    # Gini is ours times S / (S + d 1e-7), S = sum |a|: compare exactly after that factor.
    total = a.abs().flatten(1).sum(1)
    np.testing.assert_allclose(
        (ours * total / (total + D * 1e-7)).numpy(), np.asarray(theirs), rtol=1e-12
    )
    one_hot = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    one_hot[0, 0, 3, 4], one_hot[1, 0, 0, 0] = 5.0, -2.0
    torch.testing.assert_close(sparseness(one_hot), torch.full((2,), 1 - 1 / D).double())
    flat = torch.full((1, 3, 4, 4), -0.7, dtype=torch.float64)
    torch.testing.assert_close(sparseness(flat), torch.zeros(1).double(), rtol=0, atol=1e-15)
    assert sparseness(torch.zeros(1, 1, 4, 4)).isnan().all()


def test_rank_correlation_matches_scipy_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, 5, (6, 2, 4, 4), generator=generator).double()  # many ties
    second = first + torch.randint(-2, 3, first.shape, generator=generator).double()
    second[0] = first[0] * 3  # monotone: exactly 1
    second[1] = -first[1]  # exactly -1
    ours = rank_correlation(first, second)
    pairs = zip(first, second, strict=True)
    expected = [spearmanr(a.flatten(), b.flatten()).statistic for a, b in pairs]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-15)
    assert ours[0] == pytest.approx(1.0) and ours[1] == pytest.approx(-1.0)
    assert rank_correlation(torch.ones(1, 1, 2, 2), torch.rand(1, 1, 2, 2)).isnan().all()
    with pytest.raises(ValueError, match="one shape"):
        rank_correlation(first, second[:, :1])


def test_metrics_refuse_attributions_of_another_shape(images: torch.Tensor) -> None:
    model = TorchClassifier(relu_cnn())
    with pytest.raises(ValueError, match="attributions must have the inputs' shape"):
        infidelity(model, images, images[:, :, :4])
    with pytest.raises(ValueError, match="n_perturb_samples must be >= 1"):
        infidelity(model, images, images, n_perturb_samples=0)
    with pytest.raises(ValueError, match="seed must be in"):
        infidelity(model, images, images, seed=-1)
