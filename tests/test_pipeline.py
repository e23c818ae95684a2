"""The explain pipeline: every method and metric per batch, seeding by image, bad images,
streaming."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from conftest import relu_cnn
from torch import nn

import tig_batch as tig
from tig_batch.errors import DataError
from tig_batch.pipeline import (
    GAP_METHODS,
    METHODS,
    PAPER_METHODS,
    ExplainConfig,
    Flag,
    explain,
    explain_batches,
)

CONFIG = ExplainConfig(
    methods=METHODS, n_steps=8, search=tig.BaselineSearch(n_iterations=4, n_steps=4),
    smoothgrad_samples=3, guidedig_n_steps=6, blurig_n_steps=6, expectedgrad_samples=4,
    metrics=tig.MetricsConfig(tig.METRICS, deletion_steps=5, infidelity_samples=3,
                              sensitivity_samples=2),
)  # fmt: skip
REFERENCES = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))


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
    result = explain(classifier, manifold, pixels, config=CONFIG, references=REFERENCES)
    assert set(result.attributions) == set(METHODS) == set(result.alignment) == set(result.flags)
    assert set(result.delta) == set(GAP_METHODS) == set(result.output_gap)
    assert set(result.metrics) == set(tig.METRICS)
    assert all(set(scores) == set(METHODS) for scores in result.metrics.values())
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
    whole = next(explain_batches(classifier, manifold, [pixels], CONFIG, references=REFERENCES))
    parts = list(
        explain_batches(classifier, manifold, [pixels[:2], pixels[2:]], CONFIG,
                        references=REFERENCES)
    )  # fmt: skip
    assert torch.equal(torch.cat([p.sample_ids for p in parts]), whole.sample_ids)
    for name in METHODS:
        joined = torch.cat([p.attributions[name] for p in parts])
        torch.testing.assert_close(joined, whole.attributions[name], rtol=1e-5, atol=1e-6)
        for metric, scores in whole.metrics.items():
            joined = torch.cat([p.metrics[metric][name] for p in parts])
            torch.testing.assert_close(joined, scores[name], rtol=1e-4, atol=1e-6)


def test_the_metrics_are_the_engines_on_the_same_noise(pixels: torch.Tensor) -> None:
    """Each stored metric is the engine's function on the method's attributions, with the
    config's settings and each image's seed; max-sensitivity re-runs the method with every
    perturbed copy seeded like its image (so only the input changes)."""
    classifier, manifold, _ = _models()
    ids = torch.arange(10, 15)
    result = explain(classifier, manifold, pixels, sample_ids=ids, config=CONFIG,
                     references=REFERENCES)  # fmt: skip
    m, target = CONFIG.metrics, result.target
    for name in ("zero", "smoothgrad", "expectedgrad"):
        value = result.attributions[name]
        flips = tig.deletion_insertion(classifier, pixels, value, target, m.deletion_steps)
        torch.testing.assert_close(result.metrics["deletion"][name], flips.deletion_auc)
        torch.testing.assert_close(result.metrics["insertion"][name], flips.insertion_auc)
        infidelity = tig.infidelity(
            classifier, pixels, value, target, m.infidelity_sigma, m.infidelity_samples,
            seed=CONFIG.seed, sample_ids=ids,
        )  # fmt: skip
        torch.testing.assert_close(result.metrics["infidelity"][name], infidelity)
        torch.testing.assert_close(result.metrics["sparseness"][name], tig.sparseness(value))

    def smooth(model, inputs, target):  # the config's SmoothGrad, each copy seeded like its image
        copies = ids.repeat_interleave(m.sensitivity_samples)
        sigma, samples = CONFIG.smoothgrad_sigma, CONFIG.smoothgrad_samples
        return tig.smoothgrad(
            model, inputs, target, sigma, samples, CONFIG.seed, copies
        ).attributions

    sensitivity = tig.sensitivity_max(
        classifier, smooth, pixels, result.attributions["smoothgrad"], target,
        m.sensitivity_radius, m.sensitivity_samples, CONFIG.seed, ids, internal_batch_size=10,
    )  # fmt: skip
    torch.testing.assert_close(result.metrics["sensitivity"]["smoothgrad"], sensitivity)


def test_the_path_methods_are_the_engines(pixels: torch.Tensor) -> None:
    classifier, manifold, _ = _models()
    ids = torch.arange(5)
    result = explain(classifier, manifold, pixels, config=CONFIG, references=REFERENCES)
    target = result.target
    guided = tig.guided_integrated_gradients(classifier, pixels, 0.0, target, 6)
    blur = tig.blur_integrated_gradients(classifier, pixels, target, n_steps=6)
    expected = tig.expected_gradients(classifier, pixels, REFERENCES, target, 4, 0, ids)
    for name, reference in (("guidedig", guided), ("blurig", blur), ("expectedgrad", expected)):
        torch.testing.assert_close(result.attributions[name], reference.attributions)
        torch.testing.assert_close(result.delta[name], reference.delta)
        torch.testing.assert_close(result.output_gap[name], reference.output_gap)


def test_expected_gradients_needs_references_and_the_default_is_the_paper(pixels) -> None:
    classifier, manifold, _ = _models()
    with pytest.raises(ValueError, match="expectedgrad draws its base-points from reference"):
        explain(classifier, manifold, pixels, config=CONFIG)
    assert ExplainConfig().methods == PAPER_METHODS
    assert ExplainConfig().metrics.names == ("deletion", "insertion", "infidelity", "sparseness")
    none = ExplainConfig(methods=("gradient",), metrics=tig.MetricsConfig(names=()))
    assert explain(classifier, manifold, pixels, config=none).metrics == {}


def test_bad_images_are_refused_or_flagged_never_dropped(pixels: torch.Tensor) -> None:
    classifier, manifold, _ = _models()
    bad = pixels.clone()
    bad[1, 0, 3, 3] = torch.nan
    bad[3, 0, 0, 0] = torch.inf
    with pytest.raises(DataError, match=r"images \[1, 3\] have NaN or Inf"):
        explain(classifier, manifold, bad, config=CONFIG, references=REFERENCES)
    skip = ExplainConfig(**{**CONFIG.__dict__, "on_bad_image": "skip"})
    result = explain(classifier, manifold, bad, config=skip, references=REFERENCES)
    clean = explain(
        classifier, manifold, pixels[[0, 2, 4]], sample_ids=torch.tensor([0, 2, 4]), config=skip,
        references=REFERENCES,
    )  # fmt: skip
    assert len(result) == 5
    for name in METHODS:
        assert (result.flags[name][[1, 3]] & Flag.NON_FINITE_INPUT).all()
        assert not (result.flags[name][[0, 2, 4]] & Flag.NON_FINITE_INPUT).any()
        assert torch.isnan(result.attributions[name][[1, 3]]).all()
        torch.testing.assert_close(result.attributions[name][[0, 2, 4]], clean.attributions[name])
        for metric, scores in result.metrics.items():
            assert torch.isnan(scores[name][[1, 3]]).all()
            torch.testing.assert_close(scores[name][[0, 2, 4]], clean.metrics[metric][name])


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
    with pytest.raises(ValueError, match=r"unknown metric\(s\) auc; choose from deletion"):
        tig.MetricsConfig(names=("auc",))
    with pytest.raises(ValueError, match="guidedig_n_steps must be >= 1"):
        ExplainConfig(guidedig_n_steps=0)
    with pytest.raises(ValueError, match="deletion_replacement must be 'zero' or 'blur'"):
        tig.MetricsConfig(deletion_replacement="mean")
    assert tig.MetricsConfig(names=("sparseness", "deletion")).names == ("deletion", "sparseness")
    with pytest.raises(ValueError, match="'predicted', 'label' or a class index"):
        ExplainConfig(target="random")
