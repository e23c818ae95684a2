"""Interpolate the IG path: ``a + t_k (x - a)`` for every image and node, in one write.

Memory traffic: reads ``x`` and ``a`` once (2*B*d elements), writes the path batch once
(B*K*d elements). Done as torch ops it also materialises ``x - a``.
"""

from __future__ import annotations

import torch


def _check(inputs: torch.Tensor, baselines: torch.Tensor, nodes: torch.Tensor) -> None:
    if inputs.shape != baselines.shape:
        raise ValueError(
            f"inputs and baselines differ in shape: {tuple(inputs.shape)} vs "
            f"{tuple(baselines.shape)}"
        )
    if nodes.dim() != 1:
        raise ValueError(f"nodes must be 1-D, got shape {tuple(nodes.shape)}")


def path_shape(inputs: torch.Tensor, nodes: torch.Tensor) -> tuple[int, ...]:
    """Shape of the path batch: (B*K, *image shape), image-major (row ``b*K + k``)."""
    return (inputs.shape[0] * nodes.numel(), *inputs.shape[1:])


def interpolate_path_ref(
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    nodes: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch twin: write ``baselines[b] + nodes[k] * (inputs[b] - baselines[b])`` to row b*K+k.

    ``out`` (optional) receives the result in its own dtype, so it can be the model's input
    buffer; computed in at least float32.
    """
    _check(inputs, baselines, nodes)
    compute = torch.promote_types(inputs.dtype, torch.float32)
    x = inputs.flatten(1).to(compute)
    a = baselines.flatten(1).to(compute)
    path = torch.addcmul(a[:, None, :], nodes.to(compute)[None, :, None], (x - a)[:, None, :])
    path = path.view(path_shape(inputs, nodes))
    if out is None:
        return path.to(inputs.dtype)
    if out.shape != path.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(path.shape)}")
    return out.copy_(path)
