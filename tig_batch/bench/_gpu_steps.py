"""The steps of ``bench gpu`` (:mod:`tig_batch.bench.gpu`): each returns the data it reports,
with a ``failures`` entry (what failed, in a line) when part of it did not work."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tig_batch.bench._gpu_compare import compare_outputs

if TYPE_CHECKING:
    from tig_batch.backends import BackendName, Runtime
    from tig_batch.bench.gpu import Check, GpuCheckSettings, Say
    from tig_batch.pipeline import ExplainConfig

DATASET, SHAPE = "mnist-5k", (1, 28, 28)
_CLI = "from tig_batch.cli import main; main()"


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(settings: GpuCheckSettings, install_log: Path | None) -> dict[str, Any]:
    """Versions, the device and its peak bandwidth, the ONNX Runtime providers, and what the
    installer did; fails when the device is not usable."""
    from tig_batch.kernels.bench import peak_bandwidth_gbps
    from tig_batch.kernels.dispatch import kernel_choice

    names = ("tig-batch", "torch", "triton", "onnxruntime", "onnxruntime-gpu", "captum", "numpy")
    data: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "versions": {n: _version(n) for n in names},
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "kernels": kernel_choice(), "twins_only": settings.twins_only,
    }  # fmt: skip
    try:
        import onnxruntime

        data["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception as error:
        data["onnxruntime_providers"] = _error(error)
    if install_log is not None and install_log.is_file():
        fields = ("what", "status", "seconds", "detail")
        lines = install_log.read_text().splitlines()
        data["install"] = [dict(zip(fields, line.split("\t"), strict=False)) for line in lines]
    device = torch.device(settings.device)
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        data["device"] = {
            "name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "peak_gbps": peak_bandwidth_gbps(device),
        }  # fmt: skip
    elif device.type == "cuda":
        data["failures"] = {
            "device": f"{settings.device}: torch {torch.__version__} sees no CUDA device "
            f"(built for CUDA {torch.version.cuda})"
        }
    return data


def models(settings: GpuCheckSettings, say: Say) -> dict[str, Any]:
    """The demo classifier and autoencoder, trained and exported (or reused from the cache)."""
    from tig_batch.data import builtin_dataset
    from tig_batch.quickstart import build_models, default_cache_dir

    for split in ("train", "test"):
        builtin_dataset(DATASET, split)
    chosen = settings.models
    directory = default_cache_dir() / f"models-{chosen.key()}"
    built = build_models(chosen, directory, lambda step, text: say(f"  {text}"))
    return {
        "bundle": str(built.bundle), "reused": list(built.reused), "metrics": built.metrics,
        "seconds": built.seconds, "settings": dataclasses.asdict(chosen),
    }  # fmt: skip


# ------------------------------------------------------------------------------ kernels


def kernel_correctness(settings: GpuCheckSettings, say: Say) -> dict[str, Any]:
    """Every kernel against its twin at every size of the grid, in each storage dtype."""
    from tig_batch.kernels import bench

    rows = []
    for dtype in settings.dtypes:
        rows += bench.compare(
            settings.kernel_images, settings.kernel_steps, settings.kernel_ranks,
            settings.kernel_batch, getattr(torch, dtype), settings.device, settings.twins_only,
        )  # fmt: skip
        _empty_cache(settings.device)
    data: dict[str, Any] = {"rows": [dataclasses.asdict(r) for r in rows]}
    failed = [r for r in rows if not r.passed]
    if failed:
        cases = sorted({f"{r.op} ({r.dtype})" for r in failed})
        data["failures"] = {"kernels": f"{len(failed)} of {len(rows)} cases: {', '.join(cases)}"}
    return data


def kernel_benchmark(settings: GpuCheckSettings, say: Say) -> dict[str, Any]:
    """``bench kernels`` over the grid, image size by image size (a failure costs one)."""
    from tig_batch.kernels import bench

    device = torch.device(settings.device)
    peak = settings.peak_gbps or bench.peak_bandwidth_gbps(device)
    rows, failures = [], {}
    for dtype in settings.dtypes:
        for image in settings.kernel_images:
            try:
                rows += bench.run(
                    [image], settings.kernel_steps, settings.kernel_ranks, settings.kernel_batch,
                    getattr(torch, dtype), device, peak, settings.kernel_repeats,
                )  # fmt: skip
            except Exception as error:
                failures[f"{image} {dtype}"] = _error(error)
            _empty_cache(settings.device)
    return {
        "peak_gbps": peak, "kernels_timed": device.type == "cuda",
        "rows": [dataclasses.asdict(r) for r in rows], "failures": failures,
    }  # fmt: skip


def _empty_cache(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ explain


def _inputs(check: Check, work: Path) -> Path:
    """The first ``n_images`` mnist-5k test digits as one shard (written once)."""
    from tig_batch.data import builtin_dataset, open_dataset
    from tig_batch.study import first_images

    if "inputs" not in check.extra:
        work.mkdir(parents=True, exist_ok=True)
        test, n = builtin_dataset(DATASET, "test"), check.settings.n_images
        if n < open_dataset(test).count:
            path = work / f"{DATASET}-test-first{n}.h5"
            test = first_images(test, n, path, name=f"{DATASET} test")
        check.extra["inputs"] = test
    return check.extra["inputs"]


def _explain_command(
    check: Check, work: Path, backend: str, device: str, threads: int, role: str
) -> tuple[list[str], Path]:
    """``tig-batch explain`` of the check's job on ``device``, and its output directory."""
    s = check.settings
    out = work / f"{role}-{backend}"
    command = [
        sys.executable, "-c", _CLI, "explain", check.data("models")["bundle"],
        str(_inputs(check, work)), "-o", str(out), "--backend", backend, "--device", device,
        "--threads", str(threads), "--batch-size", str(s.batch_size),
        "--internal-batch-size", str(s.internal_batch_size), "--overwrite", "-q",
        *s.explain_flags(),
    ]  # fmt: skip
    return command, out


def _environ(check: Check) -> dict[str, str]:
    forced = {"TIG_BATCH_KERNELS": "torch"} if check.settings.twins_only else {}
    return {**os.environ, **forced}


def start_cpu_reference(check: Check, work: Path) -> dict[str, Any]:
    """The same explain job on the CPU, one background process per backend, sharing the
    cores the device's runs do not need; :func:`compare_explain` waits for them."""
    s = check.settings
    spare = (os.cpu_count() or 2) - s.device_threads
    threads = s.cpu_threads or max(1, spare // len(s.backends))
    running, commands = {}, {}
    for backend in s.backends:
        command, out = _explain_command(check, work, backend, "cpu", threads, "reference")
        log = (work / f"reference-{backend}.log").open("w")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=_environ(check)
        )
        running[backend] = (process, out, time.monotonic(), log)
        commands[backend] = shlex.join(command)
    check.extra["reference"] = running
    return {"threads": threads, "commands": commands}


def stop_cpu_reference(check: Check) -> None:
    """End any reference run still going (the check is over) and close its log."""
    for process, _, _, log in check.extra.get("reference", {}).values():
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def device_explain(check: Check, work: Path) -> dict[str, Any]:
    """``tig-batch explain --device DEVICE`` of the job, end to end, with each backend."""
    s = check.settings
    runs, failures = {}, {}
    for backend in s.backends:
        command, _ = _explain_command(check, work, backend, s.device, s.device_threads, "device")
        start = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, env=_environ(check),
            timeout=max(1.0, check.remaining()),
        )  # fmt: skip
        seconds = time.monotonic() - start
        runs[backend] = {
            "command": shlex.join(command), "seconds": seconds, "returncode": done.returncode,
            "images_per_s_with_start": s.n_images / seconds,
        }  # fmt: skip
        if done.returncode != 0:
            runs[backend]["output_tail"] = _tail(done.stdout + done.stderr)
            failures[backend] = _tail(done.stderr, 1) or f"exit code {done.returncode}"
    return {"runs": runs, "failures": failures}


def compare_explain(check: Check, work: Path) -> dict[str, Any]:
    """Wait for each CPU reference run, then compare its outputs with the device's."""
    results, failures = {}, {}
    for backend, (process, out, start, log) in check.extra["reference"].items():
        try:
            process.wait(timeout=max(1.0, check.remaining() - 2))
        except subprocess.TimeoutExpired:
            failures[backend] = "the CPU reference run did not finish within the budget"
            continue
        log.flush()
        if process.returncode != 0:
            failures[backend] = "CPU reference: " + _tail(Path(log.name).read_text(), 1)
            continue
        device_runs = check.data("explain on the device").get("runs", {})
        if device_runs.get(backend, {}).get("returncode") != 0:
            failures[backend] = "no output of the device run to compare"
            continue
        (reference,) = sorted(out.glob("*.h5"))
        (candidate,) = sorted((work / f"device-{backend}").glob("*.h5"))
        rows = compare_outputs(reference, candidate)
        outside = [r["dataset"] for r in rows if not r["passed"]]
        results[backend] = {"cpu_seconds": time.monotonic() - start, "rows": rows}
        if outside:
            failures[backend] = f"{len(outside)} of {len(rows)} outside: {', '.join(outside)}"
    return {"backends": results, "failures": failures}


def explain_config(settings: GpuCheckSettings, methods: tuple[str, ...]) -> ExplainConfig:
    """The job's :class:`~tig_batch.pipeline.ExplainConfig`, for ``methods``."""
    from tig_batch.pipeline import ExplainConfig

    base = ExplainConfig()
    search = base.search
    if settings.search_iterations is not None:
        search = dataclasses.replace(search, n_iterations=settings.search_iterations)
    if settings.search_n_steps is not None:
        search = dataclasses.replace(search, n_steps=settings.search_n_steps)
    return dataclasses.replace(
        base, methods=methods, search=search, n_steps=settings.n_steps or base.n_steps,
        smoothgrad_samples=settings.smoothgrad_samples or base.smoothgrad_samples,
    )  # fmt: skip


def _runtime(settings: GpuCheckSettings, backend: BackendName) -> Runtime:
    """How the check's in-process steps run ``backend`` on the device."""
    from tig_batch.backends import Runtime

    return Runtime(
        backend, settings.device, settings.device_threads,
        internal_batch_size=settings.internal_batch_size,
    )  # fmt: skip


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def throughput(check: Check) -> dict[str, Any]:
    """Images per second of plain IG (zero base-point) and tangential IG on the device, in
    this process (no start-up), each after a warm-up batch."""
    from tig_batch.backends import load_bundle
    from tig_batch.bench.e2e import test_images
    from tig_batch.pipeline import explain_batches

    s = check.settings
    images = test_images(s.n_images, SHAPE)
    rates: dict[str, dict[str, float]] = {}
    failures = {}
    for backend in s.backends:
        try:
            loaded = load_bundle(check.data("models")["bundle"], _runtime(s, backend))
        except Exception as error:
            failures[backend] = _error(error)
            continue
        rates[backend] = {}
        for method in ("zero", "tangential"):
            config = explain_config(s, (method,))
            for part in (images[: s.batch_size], images):  # warm-up, then timed
                start = time.monotonic()
                batches = part.split(s.batch_size)
                for _ in explain_batches(
                    loaded.classifier, loaded.manifold, batches, config, 0, s.device,
                    s.internal_batch_size,
                ):  # fmt: skip
                    pass
                _synchronize(s.device)
            rates[backend][method] = len(images) / (time.monotonic() - start)
    return {"images_per_s": rates, "failures": failures}


def captum(check: Check) -> dict[str, Any]:
    """Captum's IG against ours on the device: ``bench e2e``'s plain IG, every contender at
    its best internal batch size."""
    from tig_batch.backends import Runtime, load_bundle
    from tig_batch.bench._measure import gradient_flops
    from tig_batch.bench.e2e import plain_ig, test_images

    s, bundle = check.settings, check.data("models")["bundle"]
    usable, failures = [], {}
    for backend in s.backends:
        try:
            load_bundle(bundle, _runtime(s, backend))
            usable.append(backend)
        except Exception as error:
            failures[backend] = _error(error)
    cpu_module = load_bundle(bundle, Runtime("torch")).classifier.module  # type: ignore[attr-defined]
    device_module = load_bundle(bundle, _runtime(s, "torch")).classifier
    images = test_images(s.captum.n_images, SHAPE).to(s.device)
    target = device_module.logits(images).argmax(1)
    rows, flops = plain_ig(
        bundle, images, target, s.captum, _runtime(s, "onnx"), gradient_flops(cpu_module, SHAPE),
        tuple(usable),
    )  # fmt: skip
    return {
        "rows": [dataclasses.asdict(r) for r in rows], "matmul_gflops_cpu": flops.matmul_gflops,
        "failures": failures,
    }  # fmt: skip
