"""Guided IG, Blur IG and Expected Gradients against PAIR saliency, shap and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHAPE, linear_model, relu_cnn, smooth_mlp

from tig_batch import (
    TorchClassifier,
    blur_integrated_gradients,
    expected_gradients,
    guided_integrated_gradients,
    integrated_gradients,
)
from tig_batch.engine import reference_draws

MODELS = {"relu_cnn": relu_cnn, "smooth_mlp": smooth_mlp}


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """saliency calls the model once per path point; on shared cores each of those tiny calls
    costs far more with torch's thread pool than without, so run them on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def references() -> torch.Tensor:
    """Nine 1x8x8 reference images in [0, 1]."""
    return torch.rand((9, *SHAPE), generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _saliency_masks(method, model: TorchClassifier, images, target, **settings):  # type: ignore[no-untyped-def]
    """``method.GetMask`` per image, through saliency's call_model_function convention
    (images channel-last, one target per call via ``call_model_args``)."""
    from saliency.core import INPUT_OUTPUT_GRADIENTS

    def call(batch, call_model_args=None, expected_keys=None):  # type: ignore[no-untyped-def]
        x = torch.as_tensor(np.asarray(batch)).permute(0, 3, 1, 2)
        classes = torch.full((x.shape[0],), call_model_args, dtype=torch.long)
        grad = model.logits_and_grad(x, classes)[1]
        return {INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

    masks = [
        method.GetMask(x.permute(1, 2, 0).numpy(), call, int(c), **settings)
        for x, c in zip(images, target, strict=True)
    ]
    return torch.as_tensor(np.stack(masks)).permute(0, 3, 1, 2)


class _NumpyWithQuantileInterpolation:
    """numpy as saliency 0.2.1's Guided IG expects it: its ``np.quantile(...,
    interpolation=...)`` keyword was removed in numpy 2.4 (now ``method``)."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(np, name)

    def quantile(self, a, q, interpolation=None, **kwargs):  # type: ignore[no-untyped-def]
        return np.quantile(a, q, method=interpolation, **kwargs)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize(
    ("n_steps", "fraction", "max_dist"), [(20, 0.25, 0.02), (13, 0.1, 0.3), (30, 0.5, 1.0)]
)
def test_guided_ig_matches_saliency(
    model_name: str,
    n_steps: int,
    fraction: float,
    max_dist: float,
    images: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    saliency = pytest.importorskip("saliency.core")
    from saliency.core import guided_ig

    monkeypatch.setattr(guided_ig, "np", _NumpyWithQuantileInterpolation())
    model = TorchClassifier(MODELS[model_name]())
    target = model.logits(images).argmax(1)
    ours = guided_integrated_gradients(
        model, images, 0.2, target, n_steps, fraction, max_dist, internal_batch_size=3
    )
    theirs = _saliency_masks(
        saliency.GuidedIG(), model, images, target, x_baseline=np.full((8, 8, 1), 0.2),
        x_steps=n_steps, fraction=fraction, max_dist=max_dist,
    )  # fmt: skip
    # the same float64 steps; only the order of sums differs (seen: 1e-15)
    torch.testing.assert_close(ours.attributions, theirs, rtol=0, atol=1e-12)
    assert ours.attributions.abs().max() > 0.1


def test_guided_ig_without_deviation_is_left_riemann_ig(images: torch.Tensor) -> None:
    model = TorchClassifier(smooth_mlp())
    guided = guided_integrated_gradients(model, images, 0.0, 1, n_steps=16, max_dist=0.0)
    straight = integrated_gradients(model, images, 0.0, 1, n_steps=16, method="left")
    torch.testing.assert_close(guided.attributions, straight.attributions, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(guided.delta, straight.delta, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(guided.output_gap, straight.output_gap)


def test_guided_ig_completeness_improves_with_steps(images: torch.Tensor, one_thread: None) -> None:
    model = TorchClassifier(smooth_mlp())
    coarse = guided_integrated_gradients(model, images, 0.0, 1, n_steps=10)
    fine = guided_integrated_gradients(model, images, 0.0, 1, n_steps=160)
    assert fine.delta.abs().mean() < coarse.delta.abs().mean() / 8  # a left sum: error ~ 1/K
    same = guided_integrated_gradients(model, images, images, 1, n_steps=5)  # a = x
    assert torch.equal(same.attributions, torch.zeros_like(images))


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize(
    "settings",
    [
        {"max_sigma": 50.0, "n_steps": 100, "grad_step": 0.01, "sqrt": False},
        {"max_sigma": 5.0, "n_steps": 20, "grad_step": 0.05, "sqrt": True},
    ],
)
def test_blur_ig_matches_saliency(
    model_name: str, settings: dict, images: torch.Tensor, one_thread: None
) -> None:
    saliency = pytest.importorskip("saliency.core")
    model = TorchClassifier(MODELS[model_name]())
    target = model.logits(images).argmax(1)
    ours = blur_integrated_gradients(model, images, target, **settings, internal_batch_size=30)
    theirs = _saliency_masks(
        saliency.BlurIG(), model, images, target, max_sigma=settings["max_sigma"],
        steps=settings["n_steps"], grad_step=settings["grad_step"], sqrt=settings["sqrt"],
    )  # fmt: skip
    # scipy's blur and ours round differently (1e-16); the finite difference divides that by
    # grad_step (seen: 3e-14)
    torch.testing.assert_close(ours.attributions, theirs, rtol=0, atol=1e-12)
    assert ours.attributions.abs().max() > 0.1


def test_blur_ig_gap_and_blur_match_scipy(images: torch.Tensor) -> None:
    from scipy.ndimage import gaussian_filter

    model = TorchClassifier(smooth_mlp())
    result = blur_integrated_gradients(model, images, 0, 3.0, n_steps=1000, grad_step=1e-5)
    blurred = np.stack([gaussian_filter(x, (0, 3.0, 3.0), mode="constant") for x in images])
    logits = model.logits(torch.as_tensor(blurred))[:, 0]
    torch.testing.assert_close(result.output_gap, model.logits(images)[:, 0] - logits)
    # a fine path with a fine derivative nearly completes; saliency's coarse default does not
    assert (result.delta.abs() < 0.01 * result.output_gap.abs()).all()
    coarse = blur_integrated_gradients(model, images, 0, 3.0, n_steps=30, grad_step=0.01)
    assert result.delta.abs().mean() < coarse.delta.abs().mean() / 4


def test_expected_gradients_matches_shap_with_the_same_draws(
    images: torch.Tensor, references: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    shap = pytest.importorskip("shap")
    module = smooth_mlp()
    n = 7
    ours = expected_gradients(
        TorchClassifier(module), images, references, None, n, seed=4, internal_batch_size=10
    )
    draws = reference_draws(len(references), n, len(images), seed=4)
    # shap draws one reference index and one t per sample, image by image, from np.random
    indices, positions = iter(draws.indices.flatten().tolist()), iter(draws.positions.flatten())
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: next(indices))
    monkeypatch.setattr(np.random, "uniform", lambda *args, **kwargs: float(next(positions)))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # shap allocates its samples in the default dtype
    try:
        explainer = shap.GradientExplainer(module, references, batch_size=50)
        values, ranks = explainer.shap_values(images, nsamples=n, ranked_outputs=1)
    finally:
        torch.set_default_dtype(previous)
    assert torch.equal(torch.as_tensor(ranks)[:, 0], ours.target)
    torch.testing.assert_close(
        ours.attributions, torch.as_tensor(values)[..., 0], rtol=1e-12, atol=1e-14
    )


def test_expected_gradients_closed_form_on_a_linear_model(
    images: torch.Tensor, references: torch.Tensor
) -> None:
    module = linear_model()
    result = expected_gradients(TorchClassifier(module), images, references, 3, n_samples=11)
    draws = reference_draws(len(references), 11, len(images))
    drawn_mean = references[draws.indices].mean(1)  # the estimator's mean base-point
    weight = module[1].weight.detach()[3].view(SHAPE)
    torch.testing.assert_close(result.attributions, (images - drawn_mean) * weight)
    torch.testing.assert_close(result.delta, torch.zeros(4).double(), rtol=0, atol=1e-12)
    assert draws.indices.unique().numel() > 5  # draws cover the reference set
    assert draws.positions.min() >= 0 and draws.positions.max() < 1


def test_expected_gradients_is_seeded_per_image(
    images: torch.Tensor, references: torch.Tensor
) -> None:
    model = TorchClassifier(relu_cnn())
    whole = expected_gradients(model, images, references, 1, 8, seed=3, internal_batch_size=9)
    alone = expected_gradients(
        model, images[2:3], references, 1, 8, seed=3, sample_ids=torch.tensor([2])
    )
    torch.testing.assert_close(alone.attributions, whole.attributions[2:3], rtol=1e-12, atol=0)
    other = expected_gradients(model, images, references, 1, 8, seed=4)
    assert not torch.allclose(other.attributions, whole.attributions)


@pytest.mark.parametrize("method", ["guided", "blur", "expected"])
def test_bounded_model_calls(method: str, images: torch.Tensor, references: torch.Tensor) -> None:
    seen: list[int] = []

    class Recording(TorchClassifier):
        def logits_and_grad(self, inputs, target):  # type: ignore[no-untyped-def]
            seen.append(inputs.shape[0])
            return super().logits_and_grad(inputs, target)

    model = Recording(relu_cnn())
    if method == "guided":
        guided_integrated_gradients(model, images, 0.0, 0, n_steps=6, internal_batch_size=3)
        expected = 4 * 6
    elif method == "blur":
        blur_integrated_gradients(model, images, 0, n_steps=6, internal_batch_size=13)
        expected = 4 * 6
    else:
        expected_gradients(model, images, references, 0, n_samples=6, internal_batch_size=13)
        expected = 4 * 6
    assert max(seen) <= 13 and sum(seen) == expected


def test_refusals(images: torch.Tensor, references: torch.Tensor) -> None:
    model = TorchClassifier(relu_cnn())
    with pytest.raises(ValueError, match="fraction"):
        guided_integrated_gradients(model, images, fraction=0.0)
    with pytest.raises(ValueError, match="max_sigma > 0"):
        blur_integrated_gradients(model, images, max_sigma=0.0)
    with pytest.raises(ValueError, match="references must be images shaped like"):
        expected_gradients(model, images, references[:, :, :4])
