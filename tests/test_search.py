"""The tangential base-point search: its gradient against autograd, and problems with answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHAPE, D, relu_cnn, smooth_mlp

from tig_batch import (
    BaselineSearch,
    TangentSpace,
    TorchClassifier,
    alignment,
    integrated_gradients,
    optimal_baselines,
    quadrature,
    tangent_basis,
)
from tig_batch.engine import IGProjection
from tig_batch.engine._ig import integrate
from tig_batch.engine._search import OPTIMIZERS, _StepSize, alignment_gradient, projection_step


def _random_tangent(batch: int, r: int, seed: int = 0) -> TangentSpace:
    jacobian = torch.randn(batch, D, r, generator=torch.Generator().manual_seed(seed))
    return tangent_basis(jacobian.double())


def _mu_gradient_by_autograd(model, output, inputs, baselines, target, basis, rule):  # type: ignore[no-untyped-def]
    """Differentiate ``mu(IG(x; a))`` through the whole quadrature: the independent oracle."""
    a = baselines.clone().requires_grad_(True)
    t = rule.nodes.view(1, -1, 1, 1, 1)
    path = (a[:, None] + t * (inputs - a)[:, None]).reshape(-1, *SHAPE)
    logits = model(path)
    values = torch.softmax(logits, 1) if output == "probability" else logits
    values = values.gather(1, target.repeat_interleave(len(rule))[:, None]).sum()
    (g,) = torch.autograd.grad(values, path, create_graph=True)
    mean_gradient = (g.view(len(a), len(rule), -1) * rule.weights[None, :, None]).sum(1)
    v = (inputs - a).flatten(1) * mean_gradient
    (grad,) = torch.autograd.grad(alignment(v, basis).sum(), a)
    return grad.flatten(1)


def _engine_gradients(model, output, inputs, baselines, target, basis, rule):  # type: ignore[no-untyped-def]
    classifier = TorchClassifier(model, output)
    ig = integrate(classifier, inputs, baselines, target, rule, 7, basis)
    frozen, exact = (
        alignment_gradient(classifier, inputs, baselines, target, basis, rule, ig, 7, exact)
        for exact in (False, True)
    )
    return frozen, exact


def test_frozen_path_gradient_is_exact_for_a_relu_network_explaining_a_logit(
    images: torch.Tensor,
) -> None:
    rule, target = quadrature("midpoint", 6), torch.tensor([0, 1, 2, 3])
    baselines = torch.rand(images.shape, generator=torch.Generator().manual_seed(4)).double()
    basis = _random_tangent(4, 5).basis
    args = (relu_cnn(), "logit", images, baselines, target, basis, rule)
    expected = _mu_gradient_by_autograd(*args)
    frozen, exact = _engine_gradients(*args)
    torch.testing.assert_close(frozen, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(exact, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("output", ["logit", "probability"])
def test_exact_gradient_matches_autograd_where_the_frozen_one_does_not(
    output: str, images: torch.Tensor
) -> None:
    """On a smooth network the path gradient moves with ``a``: frozen-path is an approximation."""
    rule, target = quadrature("gauss-legendre", 5), torch.tensor([4, 3, 2, 1])
    basis = _random_tangent(4, 3).basis
    args = (smooth_mlp(), output, images, torch.zeros_like(images), target, basis, rule)
    expected = _mu_gradient_by_autograd(*args)
    frozen, exact = _engine_gradients(*args)
    torch.testing.assert_close(exact, expected, rtol=1e-8, atol=1e-12)
    relative_error = (frozen - expected).norm(dim=1) / expected.norm(dim=1)
    assert relative_error.min() > 1e-3


def _linear_problem(batch: int = 3, r: int = 3):  # type: ignore[no-untyped-def]
    """A linear classifier and a flat manifold where a base-point with ``mu = 1`` exists.

    With logit weights ``w``, ``IG(x; a) = (x - a) * w``; choosing ``x = a0 + U c / w`` for an
    interior ``a0`` makes ``IG(x; a0) = U c`` lie in the tangent space.
    """
    generator = torch.Generator().manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(0.5 + torch.rand(2, D, generator=generator, dtype=torch.float64))
    tangent = _random_tangent(batch, r, seed=12)
    a0 = 0.3 + 0.4 * torch.rand(batch, D, generator=generator, dtype=torch.float64)
    c = torch.randn(batch, r, 1, generator=generator, dtype=torch.float64)
    u = torch.bmm(tangent.basis, c).squeeze(2)
    u = 0.15 * u / u.abs().amax(1, keepdim=True)  # |u / w| <= 0.3 keeps x inside [0, 1]
    inputs = (a0 + u / model[1].weight.detach()[0]).view(batch, *SHAPE)
    assert inputs.min() >= 0 and inputs.max() <= 1
    return TorchClassifier(model), inputs, tangent


def test_reaches_a_known_optimum_inside_the_value_range() -> None:
    model, inputs, tangent = _linear_problem()
    search = BaselineSearch(optimizer="ascent", n_iterations=300, lr=0.05, n_steps=4, min_gap=0)
    result = optimal_baselines(model, inputs, tangent, target=0, search=search)
    assert result.alignment.min() >= 0.99
    assert result.baselines.min() >= 0 and result.baselines.max() <= 1
    final = integrated_gradients(model, inputs, result.baselines, 0, n_steps=16)
    torch.testing.assert_close(alignment(final.attributions, tangent.basis), result.alignment)


def _cnn_problem():  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(21)
    inputs = torch.rand((6, *SHAPE), generator=generator, dtype=torch.float64)
    return TorchClassifier(relu_cnn(3)), inputs, _random_tangent(6, 6, seed=22)


def test_raises_alignment_well_above_the_zero_base_point_on_a_relu_cnn() -> None:
    model, inputs, tangent = _cnn_problem()
    zero = integrated_gradients(model, inputs, 0.0, n_steps=16)
    zero_mu = alignment(zero.attributions, tangent.basis)
    for search, n_steps in (
        (BaselineSearch(optimizer="ascent", n_iterations=40, n_steps=4, min_gap=0), 4),
        (BaselineSearch(optimizer="projection", n_iterations=40, min_gap=0), 2),
        (BaselineSearch(n_iterations=40, min_gap=0), 2),  # surrogate steps of 2 nodes
    ):
        result = optimal_baselines(model, inputs, tangent, search=search)
        assert result.alignment.mean() > zero_mu.mean() + 0.2
        assert (result.alignment >= zero_mu - 1e-12).all()  # the start is kept if not beaten
        assert result.baselines.min() >= 0 and result.baselines.max() <= 1
        assert result.n_gradient_evaluations == 6 * n_steps * 41


def test_frozen_and_exact_searches_agree_on_a_relu_network() -> None:
    model, inputs, tangent = _cnn_problem()
    runs = [
        optimal_baselines(
            model,
            inputs,
            tangent,
            search=BaselineSearch(optimizer="ascent", gradient=g, n_iterations=5),
        )
        for g in ("frozen-path", "exact")
    ]
    torch.testing.assert_close(runs[0].baselines, runs[1].baselines, rtol=1e-9, atol=1e-12)


def test_min_gap_is_never_broken_by_a_kept_iterate() -> None:
    model, inputs, tangent = _cnn_problem()
    zero_gap = integrated_gradients(model, inputs, 0.0, n_steps=2).output_gap
    for optimizer in OPTIMIZERS:
        free, held = (
            optimal_baselines(model, inputs, tangent, search=search)
            for search in (
                BaselineSearch(optimizer=optimizer, n_iterations=40, min_gap=min_gap)
                for min_gap in (0.0, 0.9)
            )
        )
        assert (free.output_gap < 0.9 * zero_gap).any(), "the constraint must bind somewhere"
        assert ((held.output_gap >= 0.9 * zero_gap) | held.degenerate).all()
        assert held.alignment.mean() <= free.alignment.mean()


def test_stops_each_image_at_the_target_alignment() -> None:
    model, inputs, tangent = _cnn_problem()
    zero_mu = alignment(integrated_gradients(model, inputs, n_steps=16).attributions, tangent.basis)
    target_mu = zero_mu.max().item() + 0.02
    result = optimal_baselines(
        model, inputs, tangent, search=BaselineSearch(n_iterations=60, target_mu=target_mu)
    )
    reached = result.alignment >= target_mu
    assert reached.any()
    assert (result.iterations[reached] < 60).all()


def test_exact_search_needs_a_second_order_backend(images: torch.Tensor) -> None:
    class FirstOrderOnly:
        output = "logit"

        def __init__(self) -> None:
            self._inner = TorchClassifier(relu_cnn())

        def logits(self, inputs):  # type: ignore[no-untyped-def]
            return self._inner.logits(inputs)

        def logits_and_grad(self, inputs, target):  # type: ignore[no-untyped-def]
            return self._inner.logits_and_grad(inputs, target)

    with pytest.raises(TypeError, match="frozen-path"):
        optimal_baselines(
            FirstOrderOnly(),
            images,
            _random_tangent(4, 2),
            search=BaselineSearch(gradient="exact", optimizer="ascent"),
        )


def test_a_projection_step_makes_a_linear_models_explanation_tangential() -> None:
    """For a linear logit ``G = w`` everywhere, so the closed-form step is exact: with room in
    the value range, IG from the new base-point is the tangential part of the old IG."""
    model, inputs, tangent = _linear_problem()
    baselines = torch.rand(inputs.shape, generator=torch.Generator().manual_seed(5)).double()
    rule = quadrature("midpoint", 3)
    before = integrate(model, inputs, baselines, torch.zeros(3).long(), rule, 64, tangent.basis)
    stepped = projection_step(
        inputs.flatten(1), baselines.flatten(1), before, tangent.basis, 1.0, (-1e3, 1e3)
    )
    after = integrated_gradients(model, inputs, stepped.view_as(inputs), 0, n_steps=3)
    u = tangent.basis
    expected = torch.bmm(u, torch.bmm(u.transpose(1, 2), before.attributions[:, :, None]))
    torch.testing.assert_close(after.attributions.flatten(1), expected.squeeze(2))
    torch.testing.assert_close(alignment(after.attributions, u), torch.ones(3, dtype=u.dtype))


def test_a_projection_step_clips_damps_and_leaves_zero_gradient_pixels() -> None:
    generator = torch.Generator().manual_seed(6)
    x, a = torch.rand(2, D, generator=generator), torch.rand(2, D, generator=generator)
    g = torch.randn(2, D, generator=generator)
    g[:, :10] = 0.0
    v = (x - a) * g
    u = _random_tangent(2, 4, seed=7).basis.float()
    projection = torch.bmm(u.transpose(1, 2), v[:, :, None]).squeeze(2)
    ig = IGProjection(g, v, v.sum(1), v.norm(dim=1), projection, alignment(v, u))
    stepped = projection_step(x, a, ig, u, 0.25, (0.0, 1.0))
    # the same step in numpy, element by element
    xn, an, gn, un = (t.double().numpy() for t in (x, a, g, u))
    tangential = np.einsum("bdr,br->bd", un, np.einsum("bdr,bd->br", un, (xn - an) * gn))
    with np.errstate(divide="ignore", invalid="ignore"):
        solved = np.where(gn != 0, np.clip(xn - tangential / gn, 0.0, 1.0), an)
    np.testing.assert_allclose(stepped.numpy(), an + 0.25 * (solved - an), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stepped[:, :10], a[:, :10])


def test_projection_reaches_the_known_optimum_in_a_few_steps() -> None:
    model, inputs, tangent = _linear_problem()
    search = BaselineSearch(
        optimizer="projection", damping=1.0, n_iterations=5, n_steps=4, min_gap=0
    )
    result = optimal_baselines(model, inputs, tangent, target=0, search=search)
    assert result.alignment.min() >= 0.99  # fixed ascent needs ~300 steps here
    assert result.baselines.min() >= 0 and result.baselines.max() <= 1
    assert result.n_gradient_evaluations == 3 * 4 * 6


def test_projection_raises_alignment_faster_than_ascent_on_a_relu_cnn() -> None:
    model, inputs, tangent = _cnn_problem()
    runs = {
        name: optimal_baselines(model, inputs, tangent, search=BaselineSearch(**kw))
        for name, kw in {
            "ascent": {"optimizer": "ascent", "n_iterations": 10, "n_steps": 4, "min_gap": 0},
            "projection": {
                "optimizer": "projection",
                "n_iterations": 10,
                "n_steps": 4,
                "min_gap": 0,
            },
        }.items()
    }
    assert runs["projection"].alignment.mean() > runs["ascent"].alignment.mean()
    assert runs["projection"].baselines.min() >= 0 and runs["projection"].baselines.max() <= 1


def test_adaptive_steps_grow_after_progress_and_shrink_after_a_setback() -> None:
    search = BaselineSearch(
        optimizer="ascent", adaptive_lr=True, lr=1.0, lr_growth=2.0, lr_decay=0.25
    )
    steps = _StepSize(search, torch.zeros(3))
    rows = torch.arange(3)
    first = steps.update(rows, torch.tensor([0.5, 0.5, torch.nan]))
    torch.testing.assert_close(first, torch.ones(3))  # nothing to compare with yet
    second = steps.update(rows, torch.tensor([0.6, 0.4, 0.5]))
    torch.testing.assert_close(second, torch.tensor([2.0, 0.25, 1.0]))
    third = steps.update(rows[:1], torch.tensor([0.6]))  # no change in mu: keep the length
    torch.testing.assert_close(third, torch.tensor([2.0]))
    fixed = _StepSize(BaselineSearch(optimizer="ascent", lr=0.3), torch.zeros(3)).update(
        rows, torch.ones(3)
    )
    assert fixed == 0.3


def test_adaptive_search_stays_in_range_and_improves_on_the_start() -> None:
    model, inputs, tangent = _cnn_problem()
    zero_mu = alignment(integrated_gradients(model, inputs, n_steps=16).attributions, tangent.basis)
    search = BaselineSearch(optimizer="ascent", n_iterations=20, adaptive_lr=True)
    result = optimal_baselines(model, inputs, tangent, search=search)
    assert result.alignment.mean() > zero_mu.mean() + 0.1
    assert result.baselines.min() >= 0 and result.baselines.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "newton"}, "optimizer must be"),
        ({"optimizer": "projection", "gradient": "exact"}, "frozen-path"),
        ({"gradient": "exact"}, "frozen-path"),  # surrogate is the default
        ({"adaptive_lr": True}, "needs optimizer='ascent'"),
        ({"damping": 0.0}, "damping"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"min_gap": 1.0}, "below 1"),
        ({"min_gap": -0.1}, "min_gap must be a finite number >= 0"),
        ({"min_gap": float("nan")}, "min_gap must be a finite number"),
        ({"degenerate_gap": 2.0}, "degenerate_gap is a fraction"),
        ({"anneal": 1.5}, "anneal"),
        ({"inner_iterations": -1}, "inner_iterations"),
    ],
)
def test_search_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BaselineSearch(**kwargs)


@pytest.mark.parametrize("min_gap", [0.0, 0.5])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_reported_gap_is_the_kept_base_points(min_gap: float, optimizer: str) -> None:
    model, inputs, tangent = _cnn_problem()
    search = BaselineSearch(optimizer=optimizer, n_iterations=6, min_gap=min_gap)
    result = optimal_baselines(model, inputs, tangent, search=search)
    target = model.logits(inputs).argmax(1)
    expected = model.explained_output(inputs, target) - model.explained_output(
        result.baselines, target
    )
    torch.testing.assert_close(result.output_gap, expected, rtol=1e-9, atol=1e-12)
