"""CPU contenders for the classifier's input-gradient, side by side with ONNX Runtime.

The last push on CPU plain IG: what else could run the exported gradient faster than ONNX
Runtime's CPU provider, which leaves some 40 element-wise ops and layout reorders unfused?
Every contender runs the same function, ``(x, target) -> (logits, grad f_c)``, on the same
images and targets with the same thread count; rounds alternate between contenders and each
reports its median. Gradients are compared with torch autograd and with ONNX Runtime,
relative to the largest reference value (the export tolerance is 1e-4).

Contenders (the optional ones are skipped, with the reason, where they do not install or
load):

- ``onnxruntime``: the ONNX backend as ``tig-batch explain`` runs it (today's CPU path);
- ``torch eager``: the torch backend (autograd);
- ``inductor``: ``torch.compile`` (inductor, static shapes) of the traced gradient graph of
  the unfused model (max pooling with indices, which inductor lowers itself);
- ``inductor, fused graph``: the same of the exported graph (fused convolution and pooling,
  an op inductor cannot see into);
- ``torchscript + NNC fuser``: the unfused traced graph traced again by TorchScript, frozen,
  with TorchScript's CPU fuser (NNC) on, which compiles chains of element-wise ops into loops;
- ``openvino f32`` and ``openvino default``: OpenVINO's runtime reading ``classifier.onnx``
  after two changes it needs (``MaxUnpool``, which it cannot convert, becomes a
  ``ScatterElements`` into a flat zero tensor; the input shapes are made static); f32 pins
  ``INFERENCE_PRECISION_HINT`` to f32, ``default`` leaves OpenVINO's own choice (bf16 on
  CPUs with bf16 instructions);
- ``onnxruntime + openvino EP``: the ``onnxruntime-ep-openvino`` plugin execution provider.

    pip install openvino onnxruntime-ep-openvino   # optional: the OpenVINO contenders
    python scripts/cpu_contenders.py BUNDLE --threads 2 --batch-sizes 64,256,512 --repeats 7

The results, with the command and date, are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tig_batch.backends import Runtime, explained_value, load_bundle
from tig_batch.export import gradient_graph
from tig_batch.export._trace import TracedGraph, _state, _trace, fold_batch_norm

TOLERANCE = 1e-4  # export verification's, relative to the largest reference value
Call = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, target) -> grad


def unfused_gradient_graph(module: torch.nn.Module, example: torch.Tensor) -> TracedGraph:
    """The traced gradient graph without the fused convolution and pooling."""
    model = fold_batch_norm(module)

    def logits_and_grad(params: dict, x: torch.Tensor, target: torch.Tensor) -> tuple:
        def explained(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torch.func.functional_call(model, params, (x,))
            return explained_value(logits, target, "logit").sum(), logits

        grad, logits = torch.func.grad(explained, has_aux=True)(x)
        return logits, grad

    target = torch.zeros(len(example), dtype=torch.long)
    return TracedGraph(_trace(logits_and_grad, (example, target), model), _state(model)[1])


def inductor(graph: torch.nn.Module) -> Call:
    compiled = torch.compile(graph, dynamic=False)

    def call(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return compiled(x, target)[1]

    return call


def torchscript(graph: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor]) -> Call:
    """TorchScript, frozen, with its CPU fuser (NNC) on: loops over chains of element-wise
    ops."""
    torch._C._jit_override_can_fuse_on_cpu(True)
    torch._C._jit_set_texpr_fuser_enabled(True)
    with torch.no_grad():
        scripted = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(graph.eval(), example).eval())
        )
        for _ in range(3):  # the profiling runs, after which the fuser compiles (or fails)
            scripted(*example)

    def call(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return scripted(x, target)[1]

    return call


def without_max_unpool(source: Path, target: Path) -> Path:
    """``classifier.onnx`` with each ``MaxUnpool`` (flat indices over the whole tensor, as the
    exporter writes it) replaced by ``ScatterElements`` into a flat zero tensor."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(source)
    model.graph.initializer.append(helper.make_tensor("ov_flat", TensorProto.INT64, [1], [-1]))
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "MaxUnpool":
            nodes.append(node)
            continue
        grad, indices, shape = node.input
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
        n = f"ov_{i}_"
        nodes += [
            helper.make_node("ReduceProd", [shape], [n + "size"], keepdims=1),
            helper.make_node("ConstantOfShape", [n + "size"], [n + "zeros"], value=zero),
            helper.make_node("Reshape", [indices, "ov_flat"], [n + "indices"]),
            helper.make_node("Reshape", [grad, "ov_flat"], [n + "updates"]),
            helper.make_node(
                "ScatterElements", [n + "zeros", n + "indices", n + "updates"], [n + "flat"], axis=0
            ),
            helper.make_node("Reshape", [n + "flat", shape], [node.output[0]]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, target)
    return target


def openvino(graph: Path, batch: int, shape: tuple, threads: int, f32: bool) -> Call:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(graph)
    model.reshape({"x": [batch, *shape], "target": [batch]})
    config: dict = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda x, t: torch.from_numpy(
        np.asarray(request.infer({"x": x.numpy(), "target": t.numpy()})[1])
    )


_REGISTERED: set[str] = set()  # plugin libraries registered with ONNX Runtime (once a process)


def openvino_ep(graph: Path, threads: int) -> Call:
    import onnxruntime as ort
    import onnxruntime_ep_openvino as plugin

    name = plugin.get_ep_name()
    if name not in _REGISTERED:
        ort.register_execution_provider_library(name, plugin.get_library_path())
        _REGISTERED.add(name)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        found = {f"{d.ep_name} ({d.device.vendor})" for d in ort.get_ep_devices()}
        raise RuntimeError(f"the plugin offers no device here; ORT lists {', '.join(found)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_provider_for_devices(devices[:1], {"num_of_threads": str(threads)})
    session = ort.InferenceSession(str(graph), options)
    return lambda x, t: torch.from_numpy(
        session.run(["grad"], {"x": x.numpy(), "target": t.numpy()})[0]
    )


def contenders(
    bundle: Path, threads: int, batch: int, scratch: Path
) -> tuple[dict[str, Call], dict[str, str]]:
    """Every contender that loads at this batch size, and why the others did not."""
    runtime = Runtime(threads=threads)
    reference = load_bundle(bundle, Runtime("torch", threads=threads)).classifier
    loaded = load_bundle(bundle, runtime)
    onnx, shape = loaded.classifier, tuple(loaded.manifest.input.shape)
    example = torch.rand(2, *shape)
    module = reference.module  # type: ignore[attr-defined]
    flat = scratch / "classifier_no_maxunpool.onnx"
    builders: dict[str, Callable[[], Call]] = {
        "onnxruntime": lambda: lambda x, t: onnx.logits_and_grad(x, t)[1],
        "torch eager": lambda: lambda x, t: reference.logits_and_grad(x, t)[1],
        "inductor": lambda: inductor(unfused_gradient_graph(module, example)),
        "inductor, fused graph": lambda: inductor(gradient_graph(module, "logit", example)),
        "torchscript + NNC fuser": lambda: torchscript(  # traced at the batch: shapes fixed
            unfused_gradient_graph(module, example),
            (torch.rand(batch, *shape), torch.zeros(batch, dtype=torch.long)),
        ),
        "openvino f32": lambda: openvino(
            flat if flat.exists() else without_max_unpool(bundle / "classifier.onnx", flat),
            batch, shape, threads, f32=True,
        ),
        "openvino default": lambda: openvino(flat, batch, shape, threads, f32=False),
        "onnxruntime + openvino EP": lambda: openvino_ep(bundle / "classifier.onnx", threads),
    }  # fmt: skip
    calls, skipped = {}, {}
    for name, build in builders.items():
        try:
            calls[name] = build()
        except Exception as error:  # an optional contender that does not install or load
            skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return calls, skipped


def measure(calls: dict[str, Call], x: torch.Tensor, t: torch.Tensor, repeats: int) -> dict:
    """Median samples/s of each call (rounds alternate), and its gradient's relative
    differences to torch autograd and to ONNX Runtime."""
    grads = {name: call(x, t) for name, call in calls.items()}  # also the warm-up
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call(x, t)
            seconds[name].append(time.perf_counter() - start)
    rows = {}
    for name in calls:
        diffs = {
            ref: _differences(grads[name], grads[ref]) for ref in ("torch eager", "onnxruntime")
        }
        rows[name] = {"samples_per_s": len(x) / statistics.median(seconds[name]), **diffs}
    return rows


def _differences(grad: torch.Tensor, reference: torch.Tensor) -> str:
    """The largest difference relative to the largest reference value, and how many images
    are within the export tolerance (a near-tie in a max pool, which two implementations may
    break differently, moves one image's gradient by far more)."""
    per_image = (grad - reference).abs().flatten(1).max(1).values / reference.abs().max()
    within = int((per_image <= TOLERANCE).sum())
    return f"{float(per_image.max()):.1e} ({within}/{len(per_image)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="64,256,512")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        "| batch | contender | samples/s | / onnxruntime | max rel. diff to autograd "
        "(images within 1e-4) | to ORT |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    skipped: dict[str, str] = {}
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        generator = torch.Generator().manual_seed(batch)
        with tempfile.TemporaryDirectory() as scratch:
            calls, skipped = contenders(args.bundle, args.threads, batch, Path(scratch))
            manifest = load_bundle(args.bundle).manifest
            x = torch.rand(batch, *manifest.input.shape, generator=generator)
            t = torch.randint(0, manifest.n_classes, (batch,), generator=generator)
            rows = measure(calls, x, t, args.repeats)
        base = rows["onnxruntime"]["samples_per_s"]
        for name, row in rows.items():
            print(
                f"| {batch} | {name} | {row['samples_per_s']:,.1f} | "
                f"{row['samples_per_s'] / base:.2f} | {row['torch eager']} | "
                f"{row['onnxruntime']} |",
                flush=True,
            )
    for name, reason in skipped.items():
        print(f"\nnot run: {name}: {reason}")


if __name__ == "__main__":
    main()
