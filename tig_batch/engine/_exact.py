"""The exact gradient of the alignment with respect to the base-point, through the quadrature.

The frozen-path gradient (``_ascent``) holds the mean path gradient fixed; differentiating
through the quadrature adds a curvature term, which needs the explained output's second
derivatives (a :class:`~tig_batch.backends.SecondOrderClassifier`, i.e. the torch backend).
It is zero almost everywhere for piecewise-linear networks explaining a logit, which is why
the frozen path is the default.
"""

from __future__ import annotations

import torch

from tig_batch.backends import DEFAULT_INTERNAL_BATCH_SIZE, Classifier, SecondOrderClassifier
from tig_batch.engine._ascent import mu_cotangent
from tig_batch.engine._projection import IGProjection
from tig_batch.engine._quadrature import Quadrature
from tig_batch.kernels.dispatch import interpolate_path


def alignment_gradient(
    model: Classifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    basis: torch.Tensor,
    rule: Quadrature,
    ig: IGProjection,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
    exact: bool = True,
) -> torch.Tensor:
    """``dmu/da`` (B, d) at ``baselines``, given their IG evaluation ``ig`` (with projection).

    The frozen-path gradient ``-G * dmu/dv`` holds the mean path gradient fixed; ``exact``
    adds the curvature term, which needs a :class:`SecondOrderClassifier`.
    """
    cotangent = mu_cotangent(ig.attributions, basis, ig.projection)
    grad = -ig.mean_gradient * cotangent
    if exact:
        u = (inputs - baselines).flatten(1) * cotangent
        grad = grad + _curvature_term(
            model, inputs, baselines, target, rule, u, internal_batch_size
        )
    return grad


def _curvature_term(
    model: SecondOrderClassifier,
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    rule: Quadrature,
    cotangent: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """``sum_k w_k (1 - t_k) H_k u``: what the exact gradient of ``mu`` adds to the frozen one.

    ``H_k`` is the Hessian of ``f_c`` at the k-th path point and ``u = (x - a) * dmu/dv``; by
    differentiating ``sum_k w_k <grad f_c(a + t_k (x - a)), u>`` with respect to ``a``.
    Zero almost everywhere for piecewise-linear networks explaining a logit.
    """
    n_images, n_nodes = inputs.shape[0], len(rule)
    per_call = max(1, internal_batch_size // n_nodes)
    node_chunk = n_nodes if per_call > 1 else internal_batch_size
    out = torch.zeros_like(cotangent)
    for start in range(0, n_images, per_call):
        rows = slice(start, start + per_call)
        for k0 in range(0, n_nodes, node_chunk):
            nodes, weights = rule.nodes[k0 : k0 + node_chunk], rule.weights[k0 : k0 + node_chunk]
            with torch.enable_grad():
                a = baselines[rows].detach().requires_grad_(True)
                path = interpolate_path(inputs[rows], a, nodes)  # the twin: it needs autograd
                value = model.explained_output(path, target[rows].repeat_interleave(len(nodes)))
                (grad,) = torch.autograd.grad(value.sum(), path, create_graph=True)
                grad = grad.view(a.shape[0], len(nodes), -1)
                inner = (grad * weights[None, :, None] * cotangent[rows, None, :]).sum()
                if not inner.requires_grad:  # f_c is affine along the path: no curvature
                    continue
                (hvp,) = torch.autograd.grad(inner, a, allow_unused=True)
            if hvp is not None:
                out[rows] += hvp.flatten(1)
    return out
