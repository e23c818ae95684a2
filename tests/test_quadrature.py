"""Quadrature rules: weights sum to 1, nodes match Captum's, polynomial exactness."""

from __future__ import annotations

import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from tig_batch import RULES, quadrature

CAPTUM_NAMES = {
    "left": "riemann_left",
    "right": "riemann_right",
    "midpoint": "riemann_middle",
    "gauss-legendre": "gausslegendre",
}


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("n_steps", [2, 3, 16, 50])
def test_weights_sum_to_one_and_nodes_lie_in_the_unit_interval(method: str, n_steps: int) -> None:
    rule = quadrature(method, n_steps)
    assert len(rule) == n_steps
    assert rule.weights.sum().item() == pytest.approx(1.0, abs=1e-14)
    assert rule.nodes.min() >= 0 and rule.nodes.max() <= 1


@pytest.mark.parametrize("method", sorted(CAPTUM_NAMES))
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_nodes_and_weights_match_captum(method: str, n_steps: int) -> None:
    step_sizes, alphas = approximation_parameters(CAPTUM_NAMES[method])
    rule = quadrature(method, n_steps)
    torch.testing.assert_close(rule.nodes, torch.tensor(alphas(n_steps), dtype=torch.float64))
    torch.testing.assert_close(rule.weights, torch.tensor(step_sizes(n_steps), dtype=torch.float64))


def test_trapezoid_is_the_composite_rule_with_halved_ends() -> None:
    rule = quadrature("trapezoid", 5)
    torch.testing.assert_close(
        rule.nodes, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64)
    )
    expected = torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=torch.float64)
    torch.testing.assert_close(rule.weights, expected)


@pytest.mark.parametrize(
    ("method", "degree"),
    [("midpoint", 1), ("trapezoid", 1), ("gauss-legendre", 2 * 6 - 1)],
)
def test_rules_integrate_polynomials_up_to_their_degree_exactly(method: str, degree: int) -> None:
    rule = quadrature(method, 6)
    for power in range(degree + 1):
        integral = (rule.weights * rule.nodes**power).sum().item()
        assert integral == pytest.approx(1 / (power + 1), abs=1e-13), power


def test_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of left, right, midpoint"):
        quadrature("simpson", 4)
    with pytest.raises(ValueError, match="needs n_steps >= 2"):
        quadrature("trapezoid", 1)
