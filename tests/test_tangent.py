"""Tangent bases and the alignment mu: closed forms and independent linear algebra."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tig_batch import TorchManifold, alignment, chance_level, tangent_basis, tangent_space


def _orthonormal(d: int, r: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(d, r, generator=torch.Generator().manual_seed(seed)).double()
    )
    return q


def test_mu_is_one_in_the_span_zero_orthogonal_and_scale_invariant() -> None:
    d, r = 50, 4
    full = _orthonormal(d, r + 1)
    basis = full[:, :r].expand(3, d, r)
    inside = full[:, :r] @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    outside = full[:, r]
    mixed = inside / inside.norm() + outside
    mu = alignment(torch.stack([inside, outside, mixed]), basis)
    torch.testing.assert_close(mu, torch.tensor([1.0, 0.0, 1 / math.sqrt(2)], dtype=torch.float64))
    scaled = alignment(torch.stack([-7 * inside, 1e-6 * outside, 42 * mixed]), basis)
    torch.testing.assert_close(scaled, mu)


def test_mu_of_a_zero_explanation_is_nan() -> None:
    basis = _orthonormal(10, 2).expand(1, 10, 2)
    assert torch.isnan(alignment(torch.zeros(1, 10, dtype=torch.float64), basis)).all()


def _expected_random_mu(r: int, d: int) -> float:
    """``mu^2 ~ Beta(r/2, (d-r)/2)`` for isotropic directions, so E[mu] is a ratio of Betas."""
    return math.exp(
        math.lgamma((r + 1) / 2)
        + math.lgamma(d / 2)
        - math.lgamma(r / 2)
        - math.lgamma((d + 1) / 2)
    )


@pytest.mark.parametrize(("d", "r"), [(784, 16), (200, 10)])
def test_random_directions_average_the_chance_level(d: int, r: int) -> None:
    basis = _orthonormal(d, r).expand(4000, d, r)
    vectors = torch.randn(4000, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mean_mu = alignment(vectors, basis).mean().item()
    assert mean_mu == pytest.approx(_expected_random_mu(r, d), rel=0.02)
    assert mean_mu == pytest.approx(chance_level(r, d).item(), rel=0.05)


def _projector(columns: torch.Tensor) -> torch.Tensor:
    return columns @ torch.linalg.pinv(columns)


def test_linear_decoder_basis_spans_its_weight_columns() -> None:
    d, n = 30, 5
    decoder = nn.Linear(n, d).double()
    encoder = nn.Linear(d, n).double()
    inputs = torch.rand(3, d, dtype=torch.float64)
    space = tangent_space(TorchManifold(encoder, decoder, internal_batch_size=4), inputs)
    assert space.rank.tolist() == [n, n, n]
    weight = decoder.weight.detach()
    for basis in space.basis:
        torch.testing.assert_close(basis @ basis.T, _projector(weight))
        torch.testing.assert_close(basis.T @ basis, torch.eye(n, dtype=torch.float64))


def test_rank_drops_dependent_directions() -> None:
    columns = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jacobian = torch.cat([columns, columns[:, :1] + 2 * columns[:, 1:2]], 1)[None]
    space = tangent_basis(jacobian)
    assert space.rank.tolist() == [3]
    assert space.basis[0, :, 3].abs().max() == 0
    torch.testing.assert_close(space.basis[0] @ space.basis[0].T, _projector(columns))
    torch.testing.assert_close(
        space.chance_level, torch.tensor([math.sqrt(3 / 20)], dtype=torch.float64)
    )


def test_conv_decoder_jacobian_matches_autograd() -> None:
    decoder = nn.Sequential(
        nn.Linear(3, 16), nn.ReLU(), nn.Unflatten(1, (1, 4, 4)),
        nn.ConvTranspose2d(1, 2, 2, stride=2), nn.Sigmoid(),
    ).double()  # fmt: skip
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(128, 3)).double()
    manifold = TorchManifold(encoder, decoder, internal_batch_size=5)
    latents = manifold.encode(torch.rand(2, 2, 8, 8, dtype=torch.float64))
    jacobian = manifold.decoder_jacobian(latents)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda z: decoder(z[None]).flatten(), z)
            for z in latents
        ]
    )
    torch.testing.assert_close(jacobian, expected)
