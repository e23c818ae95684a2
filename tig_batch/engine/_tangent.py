"""Tangent spaces of the data manifold and the alignment of explanations with them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tig_batch.backends import Manifold, call_manifold


@dataclass(frozen=True)
class TangentSpace:
    """Per-image orthonormal tangent bases.

    ``basis`` is (B, d, n): the left singular vectors of the decoder Jacobian, with the columns
    whose singular value falls below ``rtol * s_max`` set to zero, so every image shares one
    shape whatever its rank and ``U^T v`` needs no masking.
    """

    basis: torch.Tensor
    rank: torch.Tensor
    singular_values: torch.Tensor

    @property
    def dim(self) -> int:
        """``d``, the number of input features."""
        return self.basis.shape[1]

    @property
    def chance_level(self) -> torch.Tensor:
        """``sqrt(r / d)`` (B,): the alignment of a random direction."""
        return chance_level(self.rank, self.dim)


def chance_level(rank: torch.Tensor | int, dim: int) -> torch.Tensor:
    """``sqrt(r / d)``: a uniformly random direction's expected alignment, approximately."""
    return torch.sqrt(torch.as_tensor(rank, dtype=torch.float64) / dim)


def tangent_basis(jacobian: torch.Tensor, rtol: float = 1e-6) -> TangentSpace:
    """Orthonormal bases of ``span(J)`` for Jacobians (B, d, n) by thin SVD.

    Singular values below ``rtol * s_max`` (per image) count as zero: their directions are
    dropped from the basis and the rank ``r`` counts the rest.
    """
    if jacobian.dim() != 3:
        raise ValueError(f"jacobian must be (B, d, n), got shape {tuple(jacobian.shape)}")
    u, s, _ = torch.linalg.svd(jacobian, full_matrices=False)
    keep = s > rtol * s[:, :1]
    return TangentSpace(u * keep[:, None, :], keep.sum(1), s)


def tangent_space(manifold: Manifold, inputs: torch.Tensor, rtol: float = 1e-6) -> TangentSpace:
    """Tangent spaces at ``D(E(x))`` for a batch: decoder Jacobian at the code, then SVD."""
    return tangent_basis(call_manifold(manifold, inputs).to(inputs.dtype), rtol)


def alignment(explanations: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``mu = ||U^T v|| / ||v||`` (B,) for explanations (B, ...), NaN where ``v = 0``.

    The fraction of each explanation that lies in the tangent space; not squared.
    """
    v = explanations.flatten(1).to(basis.dtype)
    if basis.dim() != 3 or basis.shape[:2] != v.shape:
        raise ValueError(
            f"basis has shape {tuple(basis.shape)}; expected {(*v.shape, 'r')} for "
            f"explanations {tuple(explanations.shape)}"
        )
    projection = torch.bmm(v[:, None, :], basis).squeeze(1)
    return torch.linalg.vector_norm(projection, dim=1) / torch.linalg.vector_norm(v, dim=1)
