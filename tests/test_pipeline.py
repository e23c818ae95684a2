"""The explain pipeline: every method per batch, seeding by image, bad images, streaming."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from conftest import relu_cnn
from torch import nn

import tig_batch as tig
from tig_batch.errors import DataError
from tig_batch.pipeline import METHODS, ExplainConfig, Flag, explain, explain_batches

CONFIG = ExplainConfig(
    n_steps=8, search=tig.BaselineSearch(n_iterations=4, n_steps=4), smoothgrad_samples=3
)


def _models() -> tuple[tig.TorchClassifier, tig.TorchManifold, nn.Module]:
    model = relu_cnn().float()
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    decoder = nn.Sequential(nn.Linear(5, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    return tig.TorchClassifier(model), tig.TorchManifold(encoder, decoder), model


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))


def test_every_method_is_explained_and_scored(pixels: torch.Tensor) -> None:
    classifier, manifold, model = _models()
    result = explain(classifier, manifold, pixels, config=CONFIG)
    assert set(result.attributions) == set(METHODS) == set(result.alignment) == set(result.flags)
    assert set(result.delta) == {"tangential", "zero", "uniform", "gaussian", "maxdist", "blur"}
    assert result.baselines is not None and result.baselines.shape == pixels.shape
    torch.testing.assert_close(result.prediction, model(pixels).argmax(1))
    zero_ig = IntegratedGradients(model).attribute(
        pixels, torch.zeros_like(pixels), target=result.target, n_steps=8, method="riemann_middle"
    )
    torch.testing.assert_close(result.attributions["zero"], zero_ig, rtol=1e-4, atol=1e-6)
    saliency = Saliency(model).attribute(pixels, target=result.target, abs=False)
    torch.testing.assert_close(result.attributions["gradient"], saliency)
    tangent = tig.tangent_space(manifold, pixels)
    torch.testing.assert_close(result.chance_level, tangent.chance_level)
    for name, value in result.attributions.items():
        torch.testing.assert_close(result.alignment[name], tig.alignment(value, tangent.basis))
    assert result.alignment["tangential"].mean() > result.alignment["zero"].mean()


def test_results_do_not_depend_on_the_batching(pixels: torch.Tensor) -> None:
    classifier, manifold, _ = _models()
    whole = next(explain_batches(classifier, manifold, [pixels], CONFIG))
    parts = list(explain_batches(classifier, manifold, [pixels[:2], pixels[2:]], CONFIG))
    assert torch.equal(torch.cat([p.sample_ids for p in parts]), whole.sample_ids)
    for name in METHODS:
        joined = torch.cat([p.attributions[name] for p in parts])
        torch.testing.assert_close(joined, whole.attributions[name], rtol=1e-5, atol=1e-6)


def test_bad_images_are_refused_or_flagged_never_dropped(pixels: torch.Tensor) -> None:
    classifier, manifold, _ = _models()
    bad = pixels.clone()
    bad[1, 0, 3, 3] = torch.nan
    bad[3, 0, 0, 0] = torch.inf
    with pytest.raises(DataError, match=r"images \[1, 3\] have NaN or Inf"):
        explain(classifier, manifold, bad, config=CONFIG)
    skip = ExplainConfig(**{**CONFIG.__dict__, "on_bad_image": "skip"})
    result = explain(classifier, manifold, bad, config=skip)
    clean = explain(
        classifier, manifold, pixels[[0, 2, 4]], sample_ids=torch.tensor([0, 2, 4]), config=skip
    )
    assert len(result) == 5
    for name in METHODS:
        assert (result.flags[name][[1, 3]] & Flag.NON_FINITE_INPUT).all()
        assert not (result.flags[name][[0, 2, 4]] & Flag.NON_FINITE_INPUT).any()
        assert torch.isnan(result.attributions[name][[1, 3]]).all()
        torch.testing.assert_close(result.attributions[name][[0, 2, 4]], clean.attributions[name])


def test_targets_from_labels_or_a_fixed_class(pixels: torch.Tensor) -> None:
    classifier, manifold, _ = _models()
    labels = torch.tensor([4, 3, 2, 1, 0])
    by_label = ExplainConfig(methods=("gradient",), target="label")
    assert explain(classifier, manifold, pixels, labels, config=by_label).target.tolist() == [
        4,
        3,
        2,
        1,
        0,
    ]
    fixed = ExplainConfig(methods=("gradient",), target=2)
    assert explain(classifier, manifold, pixels, config=fixed).target.tolist() == [2] * 5
    with pytest.raises(DataError, match="needs labels"):
        explain(classifier, manifold, pixels, config=by_label)


def test_configuration_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown method.*tangential, zero"):
        ExplainConfig(methods=("lime",))
    with pytest.raises(ValueError, match="'predicted', 'label' or a class index"):
        ExplainConfig(target="random")
