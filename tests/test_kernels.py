"""The fused Triton kernels against their torch twins, and the dispatch between them.

On a CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, which conftest sets
for the whole session on machines without a GPU and the ``interpret`` fixture asks for
explicitly), which is slow: shapes stay tiny (B <= 3, K <= 5, d = 77, r <= 6) and
are chosen not to be multiples of the interpreter's block sizes (32 elements of d, 4 basis
columns, 4 partial sums), so every mask and every loop boundary is crossed. bf16 is never
tested: the interpreter computes it wrongly.

Tolerances. float32: within 1e-5 of the twin. float16 storage (inputs, gradients, basis,
base-points) with float32 arithmetic: the kernel and the twin see the same float16 values and
both accumulate in float32, so float32 results agree within 1e-5 too; results stored in
float16 (paths, base-points) agree within one float16 rounding, i.e. 1e-3 for values in
[0, 1].
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHAPE
from test_search import _cnn_problem

import tig_batch.kernels.ig_accumulate_project as ig_module
import tig_batch.kernels.interpolate_path as path_module
import tig_batch.kernels.tangential_step as step_module
from tig_batch import BaselineSearch, optimal_baselines
from tig_batch.kernels import dispatch
from tig_batch.kernels.ig_accumulate_project import (
    ig_accumulate_project_ref,
    ig_accumulate_project_triton,
)
from tig_batch.kernels.interpolate_path import interpolate_path_ref, interpolate_path_triton
from tig_batch.kernels.tangential_step import tangential_step_ref, tangential_step_triton

B, K, R = 3, 5, 6
IMAGE = (1, 7, 11)  # d = 77: not a multiple of the interpreter's 32-element blocks
D = 77
FP32 = {"rtol": 1e-5, "atol": 1e-5}
FP16_STORED = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run Triton kernels in the CPU interpreter (the wrappers build them on first launch)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# --- interpolate_path --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [(torch.float32, None), (torch.float16, torch.float16), (torch.float32, torch.float16)],
)
def test_interpolate_path_matches_its_twin(
    interpret: None, dtype: torch.dtype, out_dtype: torch.dtype | None
) -> None:
    inputs, baselines = _rand(B, *IMAGE, seed=0, dtype=dtype), _rand(B, *IMAGE, seed=1, dtype=dtype)
    nodes = _rand(K, seed=2)
    shape = (B * K, *IMAGE)
    out = None if out_dtype is None else torch.full(shape, torch.nan, dtype=out_dtype)
    expected_out = None if out_dtype is None else torch.empty(shape, dtype=out_dtype)
    result = interpolate_path_triton(inputs, baselines, nodes, out)
    expected = interpolate_path_ref(inputs, baselines, nodes, expected_out)
    assert result.shape == shape and result.dtype == (out_dtype or dtype)
    if out is not None:
        assert result.data_ptr() == out.data_ptr()  # written in place, e.g. a model's buffer
    tolerance = FP32 if result.dtype == torch.float32 else FP16_STORED
    torch.testing.assert_close(result, expected, **tolerance)


# --- ig_accumulate_project ---------------------------------------------------------------------


def _ig_problem(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    inputs = _rand(B, *IMAGE, seed=3, dtype=dtype)
    baselines = _rand(B, *IMAGE, seed=4, dtype=dtype)
    baselines[1] = inputs[1]  # v = 0 for image 1: norm 0, alignment NaN
    grads = _randn(B * K, *IMAGE, seed=5, dtype=dtype)
    weights = _rand(K, seed=6, dtype=dtype)
    basis = torch.linalg.qr(_randn(B, D, R, seed=7)).Q.to(dtype)
    return grads, weights, inputs, baselines, basis


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_basis", [True, False], ids=["basis", "no-basis"])
def test_ig_accumulate_project_matches_its_twin(
    interpret: None, dtype: torch.dtype, with_basis: bool
) -> None:
    grads, weights, inputs, baselines, basis = _ig_problem(dtype)
    basis = basis if with_basis else None
    result = ig_accumulate_project_triton(grads, weights, inputs, baselines, basis)
    expected = ig_accumulate_project_ref(grads, weights, inputs, baselines, basis)
    for name in ("mean_gradient", "attributions", "attribution_sum", "norm"):
        value = getattr(result, name)
        assert value.dtype == torch.float32, name  # float32 accumulation and results
        torch.testing.assert_close(value, getattr(expected, name), **FP32)
    if with_basis:
        torch.testing.assert_close(result.projection, expected.projection, **FP32)
        torch.testing.assert_close(result.alignment, expected.alignment, equal_nan=True, **FP32)
        assert result.alignment[1].isnan() and result.alignment[[0, 2]].isfinite().all()
    else:
        assert result.projection is None and result.alignment is None
    assert result.norm[1] == 0


# --- tangential_step ---------------------------------------------------------------------------


def _step_problem() -> tuple[torch.Tensor, ...]:
    v = _randn(B, D, seed=8)
    mean_gradient = _randn(B, D, seed=9)
    basis = torch.linalg.qr(_randn(B, D, R, seed=10)).Q
    projection = torch.bmm(v[:, None, :], basis).squeeze(1)
    v[1] = 0  # mu undefined: no step
    projection[1] = 0
    projection[2] = 0  # U^T v = 0: no step either
    baselines = _rand(B, D, seed=11)
    return v, mean_gradient, basis, projection, baselines


@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "plain"])
@pytest.mark.parametrize("lr_kind", ["float", "per-image"])
def test_tangential_step_matches_its_twin(interpret: None, normalize: bool, lr_kind: str) -> None:
    v, mean_gradient, basis, projection, baselines = _step_problem()
    projection[2] = torch.bmm(v[2:, None, :], basis[2:]).squeeze(1)  # image 2 steps too
    lr = 0.3 if lr_kind == "float" else torch.tensor([0.3, 2.0, 0.7])
    value_range = (0.1, 0.9)  # some coordinates clip
    args = (v, mean_gradient, basis, projection, baselines, lr, value_range, normalize)
    result = tangential_step_triton(*args)
    expected = tangential_step_ref(*args)
    torch.testing.assert_close(result, expected, **FP32)
    torch.testing.assert_close(result[1], baselines[1].clamp(*value_range), **FP32)  # v = 0
    assert (result[[0, 2]] != baselines[[0, 2]].clamp(*value_range)).any()
    assert result.min() >= 0.1 and result.max() <= 0.9


def test_tangential_step_stays_put_where_the_projection_vanishes(interpret: None) -> None:
    v, mean_gradient, basis, projection, baselines = _step_problem()
    args = (v, mean_gradient, basis, projection, baselines, 0.5, (0.0, 1.0))
    result = tangential_step_triton(*args)
    torch.testing.assert_close(result, tangential_step_ref(*args), **FP32)
    torch.testing.assert_close(result[1:], baselines[1:], rtol=0, atol=0)


def test_tangential_step_reads_float16_and_writes_the_baselines_dtype(interpret: None) -> None:
    v, mean_gradient, basis, projection, baselines = _step_problem()
    projection[2] = torch.bmm(v[2:, None, :], basis[2:]).squeeze(1)
    basis16, baselines16, gradient16 = basis.half(), baselines.half(), mean_gradient.half()
    result = tangential_step_triton(v, gradient16, basis16, projection, baselines16, 0.4, (0, 1))
    assert result.dtype == torch.float16
    # The twin on the same float16 values, promoted: float32 arithmetic, then one rounding.
    expected = tangential_step_ref(
        v, gradient16.float(), basis16.float(), projection, baselines16.float(), 0.4, (0, 1)
    )
    torch.testing.assert_close(result.float(), expected, **FP16_STORED)


def test_tangential_step_twin_reads_float16_like_the_kernel() -> None:
    """The twin takes the kernel's float16 storage (it raised in ``bmm`` before): float32
    arithmetic on the float16 values, the base-points back in their dtype."""
    v, mean_gradient, basis, projection, baselines = _step_problem()
    basis16, baselines16, gradient16 = basis.half(), baselines.half(), mean_gradient.half()
    result = tangential_step_ref(v, gradient16, basis16, projection, baselines16, 0.4, (0, 1))
    assert result.dtype == torch.float16
    expected = tangential_step_ref(
        v, gradient16.float(), basis16.float(), projection, baselines16.float(), 0.4, (0, 1)
    )
    torch.testing.assert_close(result, expected.half(), rtol=0, atol=0)


# --- host wrappers: validation -----------------------------------------------------------------


def test_wrappers_raise_on_bad_arguments(interpret: None) -> None:
    inputs, nodes = _rand(B, *IMAGE, seed=0), _rand(K, seed=1)
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate_path_triton(inputs, inputs[:2], nodes)
    with pytest.raises(ValueError, match="out has shape"):
        interpolate_path_triton(inputs, inputs, nodes, torch.empty(B, *IMAGE))
    with pytest.raises(ValueError, match="contiguous"):
        out = torch.empty(*IMAGE, B * K).permute(3, 0, 1, 2)
        interpolate_path_triton(inputs, inputs, nodes, out)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        interpolate_path_triton(inputs.bfloat16(), inputs.bfloat16(), nodes)
    grads, weights, x, a, basis = _ig_problem(torch.float32)
    with pytest.raises(ValueError, match="grads has shape"):
        ig_accumulate_project_triton(grads[:-1], weights, x, a, basis)
    with pytest.raises(ValueError, match="basis has shape"):
        ig_accumulate_project_triton(grads, weights, x, a, basis[:, :-1])
    v, g, u, p, a = _step_problem()
    with pytest.raises(ValueError, match="projection has shape"):
        tangential_step_triton(v, g, u, p[:, :-1], a, 0.1, (0, 1))
    with pytest.raises(ValueError, match="lr must be"):
        tangential_step_triton(v, g, u, p, a, torch.ones(2), (0, 1))
    with pytest.raises(ValueError, match="lo <= hi"):
        tangential_step_triton(v, g, u, p, a, 0.1, (1, 0))


def test_wrappers_refuse_cpu_tensors_outside_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inputs = _rand(B, *IMAGE, seed=0)
    with pytest.raises(RuntimeError, match=r"needs CUDA tensors.*TRITON_INTERPRET=1"):
        interpolate_path_triton(inputs, inputs, _rand(K, seed=1))


def test_importing_the_kernels_imports_no_triton() -> None:
    code = (
        "import sys, tig_batch, tig_batch.kernels.dispatch, tig_batch.cli.bench;"
        "assert 'triton' not in sys.modules, 'triton imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- dispatch ----------------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which implementation each dispatch call reaches (both stubbed to the twin)."""
    seen: list[str] = []
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)

    def spy(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(name)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(dispatch, "interpolate_path_ref", spy("torch", interpolate_path_ref))
    monkeypatch.setattr(path_module, "interpolate_path_triton", spy("triton", interpolate_path_ref))
    return seen


def _dispatch_once() -> None:
    inputs = _rand(B, *IMAGE, seed=0)
    dispatch.interpolate_path(inputs, inputs, _rand(K, seed=1))


def test_auto_dispatch_takes_the_twin_for_cpu_tensors(calls: list[str]) -> None:
    _dispatch_once()
    with dispatch.use_kernels("auto"):
        _dispatch_once()
    assert calls == ["torch", "torch"]


def test_the_environment_variable_forces_either(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    _dispatch_once()
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    _dispatch_once()
    assert calls == ["triton", "torch"]


def test_use_kernels_forces_either_and_wins_over_the_environment(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    with dispatch.use_kernels("triton"):
        _dispatch_once()
        with dispatch.use_kernels("torch"):
            _dispatch_once()
        _dispatch_once()
    _dispatch_once()
    assert calls == ["triton", "torch", "triton", "torch"]


def test_a_bad_kernel_choice_raises(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        pytest.raises(ValueError, match="kernels must be auto, triton or torch"),
        dispatch.use_kernels("cuda"),  # type: ignore[arg-type]
    ):
        pass
    monkeypatch.setenv(dispatch.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="TIG_BATCH_KERNELS must be auto, triton or torch"):
        _dispatch_once()
    assert calls == []


# --- the whole search through the kernels ------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_search_gives_the_same_base_points_with_triton_and_torch_kernels(
    interpret: None, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    model, inputs, tangent = _cnn_problem()
    model.module.to(dtype)
    inputs = inputs[:3].to(dtype)
    tangent = dataclasses.replace(
        tangent,
        basis=tangent.basis[:3].to(dtype),
        rank=tangent.rank[:3],
        singular_values=tangent.singular_values[:3],
    )
    search = BaselineSearch(optimizer="ascent", n_iterations=3, n_steps=5, lr=0.3)
    launched: list[str] = []
    for module, name in (
        (path_module, "interpolate_path_triton"),
        (ig_module, "ig_accumulate_project_triton"),
        (step_module, "tangential_step_triton"),
    ):
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _f=original, _n=name: launched.append(_n) or _f(*a)
        )
    with dispatch.use_kernels("triton"):
        fused = optimal_baselines(model, inputs, tangent, target=0, search=search)
    assert set(launched) == {
        "interpolate_path_triton", "ig_accumulate_project_triton", "tangential_step_triton"
    }  # fmt: skip
    with dispatch.use_kernels("torch"):
        reference = optimal_baselines(model, inputs, tangent, target=0, search=search)
    tolerance = {"rtol": 1e-9, "atol": 1e-12} if dtype == torch.float64 else FP32
    assert fused.baselines.shape == (3, *SHAPE)
    for name in ("baselines", "alignment", "output_gap", "distance"):
        torch.testing.assert_close(getattr(fused, name), getattr(reference, name), **tolerance)
    assert torch.equal(fused.iterations, reference.iterations)
    assert (fused.baselines != 0).any()  # the search moved away from the zero base-point


# --- GPU code generation, checked without a GPU ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_autotune_config_compiles_for_an_h100_without_spills(dtype: str) -> None:
    """What the interpreter cannot check: GPU code generation, vector loads, register spills.

    In a fresh process: the interpreter patches ``triton.language`` in place, after which the
    compiler no longer works in the same process.
    """
    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("sm90_codegen.py")
    result = subprocess.run(
        [sys.executable, str(script), dtype], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
