"""Deletion and insertion against closed forms on a linear model and Quantus' pixel flipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHAPE, linear_model, relu_cnn

from tig_batch import TorchClassifier, deletion_insertion, make_baselines
from tig_batch.engine import pixel_order


def _linear_curves(module, images, attributions, target, replacement, n_steps):  # type: ignore[no-untyped-def]
    """Deletion and insertion of a linear logit, by hand: removing pixel i changes the logit by
    w_i (r_i - x_i), so each curve is a cumulative sum over the pixels in attribution order."""
    weights = module[1].weight.detach()[target].numpy().reshape(len(target), -1)
    biases = module[1].bias.detach()[target].numpy()
    deletion, insertion = [], []
    for x, r, a, weight, bias in zip(
        images.numpy(), replacement.numpy(), attributions.numpy(), weights, biases, strict=True
    ):
        x, r = x.reshape(-1), r.reshape(-1)
        order = np.argsort(-a.reshape(-1), kind="stable")
        swap = np.concatenate([[0.0], np.cumsum((weight * (r - x))[order])])
        counts = np.arange(n_steps + 1) * x.size // n_steps
        deletion.append(bias + weight @ x + swap[counts])
        insertion.append(bias + weight @ r - swap[counts])
    return np.array(deletion), np.array(insertion), counts / x.size


@pytest.mark.parametrize("kind", ["zero", "blur"])
@pytest.mark.parametrize("n_steps", [20, 7])
def test_linear_model_closed_form(kind: str, n_steps: int, images: torch.Tensor) -> None:
    module = linear_model()
    replacement = make_baselines(kind, images)
    target = (module(images) - module(replacement)).argmax(1)  # a positive gap to normalise by
    weight = module[1].weight.detach()[target].view(4, *SHAPE)
    attributions = (images - replacement) * weight  # IG from the replacement (exact here)
    result = deletion_insertion(
        TorchClassifier(module), images, attributions, target, n_steps=n_steps,
        replacement=kind, normalize="gap", internal_batch_size=9,
    )  # fmt: skip
    deletion, insertion, fractions = _linear_curves(
        module, images, attributions, target, replacement, n_steps
    )
    outputs, replaced = deletion[:, :1], deletion[:, -1:]
    assert not result.undefined.any()
    np.testing.assert_allclose(result.fractions.numpy(), fractions, rtol=0, atol=0)
    np.testing.assert_allclose(result.outputs.numpy(), outputs[:, 0], rtol=1e-12)
    np.testing.assert_allclose(result.replacement_outputs.numpy(), replaced[:, 0], rtol=1e-12)
    for ours, raw in ((result.deletion, deletion), (result.insertion, insertion)):
        np.testing.assert_allclose(
            ours.numpy(), (raw - replaced) / (outputs - replaced), rtol=1e-10, atol=1e-12
        )
    np.testing.assert_allclose(
        result.deletion_auc.numpy(),
        np.trapezoid((deletion - replaced) / (outputs - replaced), fractions, axis=1),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        result.insertion_auc.numpy(),
        np.trapezoid((insertion - replaced) / (outputs - replaced), fractions, axis=1),
        rtol=1e-10,
    )
    # the attribution order deletes the positive mass first: below the random order's 0.5
    assert (result.deletion_auc < result.insertion_auc).all()


def test_output_normalisation_flags_images_it_cannot_normalise(images: torch.Tensor) -> None:
    module = linear_model()
    logits = module(images).detach()
    target = logits.argmin(1)  # the least likely class: its logit is negative here
    assert (logits.gather(1, target[:, None]) < 0).all()
    weight = module[1].weight.detach()[target].view(4, *SHAPE)
    result = deletion_insertion(TorchClassifier(module), images, images * weight, target)
    assert result.undefined.all()
    assert result.deletion.isnan().all() and result.insertion_auc.isnan().all()
    assert result.outputs.isfinite().all()  # the raw outputs are kept for a reader
    positive = logits.argmax(1)
    weight = module[1].weight.detach()[positive].view(4, *SHAPE)
    defined = deletion_insertion(TorchClassifier(module), images, images * weight, positive)
    assert not defined.undefined.any()
    torch.testing.assert_close(defined.deletion[:, 0], torch.ones(4).double())
    torch.testing.assert_close(defined.insertion[:, -1], torch.ones(4).double())


def test_curves_match_quantus_pixel_flipping(images: torch.Tensor) -> None:
    quantus = pytest.importorskip("quantus")
    images = images.float().double()  # Quantus feeds the model float32: keep that cast exact
    module = relu_cnn()
    model = TorchClassifier(module)
    target = model.logits(images).argmax(1)
    attributions = torch.randn(images.shape, generator=torch.Generator().manual_seed(5)).double()
    ours = deletion_insertion(model, images, attributions, target, n_steps=16)
    assert not ours.undefined.any()

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return module(x.double())

    flipping = quantus.PixelFlipping(
        features_in_step=4, perturb_baseline=0.0, normalise=False, abs=False,
        disable_warnings=True,
    )  # fmt: skip
    theirs = flipping(
        model=Double().eval(), x_batch=images.numpy(), y_batch=target.numpy(),
        a_batch=attributions.numpy(), softmax=False, device="cpu",
    )  # fmt: skip
    # Quantus records f_c after each step of 4 pixels (no point at 0 removed), unnormalised
    raw = ours.deletion * ours.outputs[:, None]
    np.testing.assert_allclose(raw[:, 1:].numpy(), np.asarray(theirs), rtol=1e-12, atol=1e-12)


def test_pixel_order_sums_channels_and_breaks_ties_in_row_major_order() -> None:
    attributions = torch.zeros(1, 2, 2, 3)
    attributions[0, 0, 1, 2], attributions[0, 1, 1, 2] = 3.0, -1.0  # pixel 5: 2
    attributions[0, 0, 0, 1] = 2.0  # pixel 1: 2, a tie with pixel 5, and first in row-major
    attributions[0, 1, 0, 0] = -1.0  # pixel 0: -1, last
    assert pixel_order(attributions).tolist() == [[1, 5, 2, 3, 4, 0]]


def test_batching_and_bounded_model_calls(images: torch.Tensor) -> None:
    seen: list[int] = []

    class Recording(TorchClassifier):
        def logits(self, inputs):  # type: ignore[no-untyped-def]
            seen.append(inputs.shape[0])
            return super().logits(inputs)

    model = Recording(relu_cnn())
    attributions = torch.randn(images.shape, generator=torch.Generator().manual_seed(0)).double()
    target = model.logits(images).argmax(1)
    whole = deletion_insertion(model, images, attributions, target, n_steps=5)
    assert not whole.undefined.any()
    seen.clear()
    split = deletion_insertion(model, images, attributions, target, 5, internal_batch_size=5)
    assert max(seen) <= 5 and sum(seen) == 4 * 2 * 6
    for name in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), rtol=1e-12, atol=0)
    alone = deletion_insertion(model, images[1:2], attributions[1:2], target[1:2], 5)
    torch.testing.assert_close(alone.deletion, whole.deletion[1:2], rtol=1e-12, atol=0)


def test_refusals(images: torch.Tensor) -> None:
    model = TorchClassifier(relu_cnn())
    with pytest.raises(ValueError, match="replacement must be"):
        deletion_insertion(model, images, images, replacement="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalize must be"):
        deletion_insertion(model, images, images, normalize="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        deletion_insertion(model, images, images, n_steps=0)
    with pytest.raises(ValueError, match="inputs must be images"):
        deletion_insertion(model, images[0], images[0])
