"""Trace gradient and Jacobian-vector-product graphs into plain modules that export to ONNX.

``torch.onnx.export`` cannot export a module that calls ``torch.autograd.grad`` or
``torch.func``. Tracing the *function* ``torch.func.grad(f_c)`` with ``make_fx`` (symbolic
shapes, core decompositions plus ours), with the parameters passed as inputs through
``torch.func.functional_call``, yields an FX graph of ordinary ATen ops; wrapping it in a module
that holds the parameters as buffers gives something the dynamo exporter takes, with a dynamic
batch dimension.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tig_batch.backends import ExplainedOutput, explained_value
from tig_batch.errors import ModelError
from tig_batch.export import _conv_pool
from tig_batch.export import _onnx_ops as _ops
from tig_batch.export._conv_pool import fuse_conv_max_pool
from tig_batch.export._decompositions import decomposition_table
from tig_batch.export._onnx_ops import mask_before_unpooling

OPSET = 18


def translation_table() -> dict[Callable, Callable]:
    """Our ops and their ONNX translations, for ``torch.onnx.export``."""
    return {**_ops.translation_table(), **_conv_pool.translation_table()}


class TracedGraph(nn.Module):
    """A traced function of two inputs and the model's state, the state held as buffers."""

    def __init__(self, graph: torch.fx.GraphModule, state: list[torch.Tensor]) -> None:
        super().__init__()
        self.graph_module = graph
        self.n_state = len(state)
        for i, tensor in enumerate(state):
            self.register_buffer(f"state_{i}", tensor.detach().clone())

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = [getattr(self, f"state_{i}") for i in range(self.n_state)]
        return self.graph_module(first, second, *state)


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel: what an eval-mode batch norm computes."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        scale = torch.rsqrt(norm.running_var + norm.eps)
        shift = -norm.running_mean * scale
        if norm.affine:
            scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
        shape = (-1,) + (1,) * {nn.BatchNorm1d: 0, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[type(norm)]
        self.register_buffer("scale", scale.detach().reshape(shape))
        self.register_buffer("shift", shift.detach().reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every eval-mode batch norm folded away.

    A batch norm right after a convolution in an ``nn.Sequential`` is folded into the
    convolution's weight and bias; any other becomes its per-channel affine map. The same
    function, but simpler graphs: the traced second derivative of batch norm's own backward
    pins the batch size into the decoder's JVP graph; two multiply-adds are cheaper than batch
    norm's gradient; and a folded one costs nothing at all, where the affine map's scale is a
    multiply over the whole activation in the backward pass (5% of the demo CNN's gradient).
    """
    model = copy.deepcopy(model).eval()
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for module in list(model.modules()):
        previous: tuple[str, nn.Module] | None = None
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
                if isinstance(module, nn.Sequential) and _foldable(previous, uses):
                    conv_name, conv = previous  # type: ignore[misc]
                    transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, child, transposed))
                    child = nn.Identity()
                else:
                    child = ChannelAffine(child)
                setattr(module, child_name, child)
            previous = child_name, child
    return model


def _foldable(previous: tuple[str, nn.Module] | None, uses: Counter[int]) -> bool:
    """A convolution used once (its output feeds only the batch norm that follows it).

    Grouped transposed convolutions are left alone: torch's folding scales their weight
    along the wrong axis.
    """
    if previous is None or uses[id(previous[1])] != 1:
        return False
    conv = previous[1]
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return conv.groups == 1
    return isinstance(conv, nn.modules.conv._ConvNd)


def _state(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, _ in named], [tensor.detach() for _, tensor in named]


def _trace(
    fn: Callable, example: tuple[torch.Tensor, ...], model: nn.Module
) -> torch.fx.GraphModule:
    names, state = _state(model)

    def with_state(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs, params = args[: len(example)], args[len(example) :]
        return fn(dict(zip(names, params, strict=True)), *inputs)

    try:
        graph = make_fx(
            with_state, decomposition_table=decomposition_table(), tracing_mode="symbolic"
        )(*example, *state)
        # then functionalize the traced graph: autograd formulas may write in place, which
        # ONNX cannot express. Not in one pass: functionalize refuses the autograd.Function of
        # a fused convolution and pooling (``_conv_pool``), which the first pass inlines.
        graph = make_fx(
            torch.func.functionalize(graph, remove="mutations"), tracing_mode="symbolic"
        )(*example, *state)
    except Exception as error:
        raise ModelError(f"cannot trace {type(model).__name__}: {error}") from error
    # forward-mode AD leaves unused shape checks and zero tangents behind
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


@functools.cache
def _onnx_ops() -> Callable[[torch._ops.OpOverload], bool] | None:
    """Whether the ONNX exporter translates an op (directly or by its own decompositions).

    Uses the exporter's registry, a private API: if it moves, the pre-check is skipped and the
    export itself reports unsupported ops.
    """
    try:
        from torch.onnx._internal.exporter import _decomp, _registration

        with _quiet_exporter():
            registry = _registration.ONNXRegistry.from_torchlib()
        decomposed = set(_decomp.create_onnx_friendly_decomposition_table(set()))
    except Exception:  # pragma: no cover - depends on torch internals
        return None
    ours = set(translation_table())
    return lambda op: registry.is_registered(op) or op in decomposed or op in ours


def unsupported_ops(graph: torch.fx.GraphModule) -> list[str]:
    """ATen ops in a traced graph that neither we nor the ONNX exporter can lower."""
    exportable = _onnx_ops()
    if exportable is None:
        return []
    ops = {n.target for n in graph.graph.nodes if n.op == "call_function"}
    return sorted(
        str(op) for op in ops if isinstance(op, torch._ops.OpOverload) and not exportable(op)
    )


def _input_gradient(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.func.grad(lambda x: module(x).sum())


def _layers_using(model: nn.Module, example: torch.Tensor, op_names: list[str]) -> list[str]:
    """Leaf layers whose own input-gradient graph contains one of ``op_names``."""
    seen: dict[str, tuple[nn.Module, torch.Tensor]] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if args:
                seen.setdefault(name, (module, args[0]))

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    found = []
    for name, (module, inputs) in seen.items():
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            continue
        with contextlib.suppress(Exception):
            graph = make_fx(_input_gradient(module), decomposition_table=decomposition_table())(
                inputs
            )
            if set(unsupported_ops(graph)) & set(op_names):
                found.append(f"layer {name!r} ({type(module).__name__})")
    return found


def _check_exportable(graph: torch.fx.GraphModule, model: nn.Module, example: torch.Tensor) -> None:
    missing = unsupported_ops(graph)
    if missing:
        layers = _layers_using(model, example, missing) or ["a layer that could not be located"]
        raise ModelError(
            f"cannot export the input-gradient of {type(model).__name__}: no ONNX lowering for "
            f"{', '.join(missing)}, used by {', '.join(layers)}. Supported layers are listed in "
            "docs/export.md."
        )


def gradient_graph(model: nn.Module, output: ExplainedOutput, example: torch.Tensor) -> TracedGraph:
    """``(x, target) -> (logits, grad f_c(x))`` as a plain module, for images like ``example``."""
    model = fuse_conv_max_pool(fold_batch_norm(model))

    def logits_and_grad(
        params: dict[str, torch.Tensor], x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def explained(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torch.func.functional_call(model, params, (x,))
            return explained_value(logits, target, output).sum(), logits

        grad, logits = torch.func.grad(explained, has_aux=True)(x)
        return logits, grad

    target = torch.zeros(example.shape[0], dtype=torch.long)
    graph = _trace(logits_and_grad, (example, target), model)
    mask_before_unpooling(graph)
    _check_exportable(graph, model, example)
    return TracedGraph(graph, _state(model)[1])


def jvp_graph(decoder: nn.Module, example: torch.Tensor) -> TracedGraph:
    """``(z, dz) -> (D(z), J(z) dz)``: one Jacobian column per row when ``dz`` is one-hot.

    The JVP is computed as the transpose of the VJP, ``J dz = d/du <J^T u, dz>``, in reverse
    mode only: ``torch.func.jvp`` gives the parameters zero tangents whose materialised shapes
    pin the batch size into the graph. ``u -> J^T u`` is linear, so this is exact.
    """
    decoder = fold_batch_norm(decoder)

    def jvp(
        params: dict[str, torch.Tensor], z: torch.Tensor, dz: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoded, vjp = torch.func.vjp(
            lambda z: torch.func.functional_call(decoder, params, (z,)), z
        )
        _, transpose = torch.func.vjp(lambda u: vjp(u)[0], torch.zeros_like(decoded))
        return decoded, transpose(dz)[0]

    graph = _trace(jvp, (example, torch.ones_like(example)), decoder)
    _check_exportable(graph, decoder, example)
    return TracedGraph(graph, _state(decoder)[1])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and warnings; errors still propagate."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def save_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
) -> None:
    """Export ``module`` to ``path`` with a dynamic leading (batch) dimension on every input."""
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = tuple({0: batch} for _ in example)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                example,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                custom_translation_table=translation_table(),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            program.save(str(path))
    except Exception as error:
        raise ModelError(f"ONNX export of {output_names} failed: {error}") from error
