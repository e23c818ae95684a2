"""Compile every kernel and autotune config for an H100 (sm_90) without a GPU, and check it.

Run by ``test_kernels.py`` in a fresh process (``python tests/sm90_codegen.py float32``):
fails if a kernel does not compile, spills registers (ptxas -v), or, for float32, streams its
large operands without 8- or 16-byte vector loads. Pointers and the sizes and strides listed
below are declared 16-divisible, as Triton specialises them at launch for e.g. d = 3072 and
r = 144.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas

import tig_batch.kernels.ig_accumulate_project as ig_module
import tig_batch.kernels.interpolate_path as path_module
import tig_batch.kernels.tangential_step as step_module

TARGET = GPUTarget("cuda", 90, 32)
DIVISIBLE_BY_16 = {
    "n_elements", "rank", "stride_xb", "stride_ab", "stride_outb", "stride_gb", "stride_ub",
    "stride_ud", "stride_vb", "stride_pb",
}  # fmt: skip


def compile_ptx(fn, constexprs: dict, pointer: str, num_warps: int) -> str:  # type: ignore[no-untyped-def]
    names = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    signature = {
        name: "constexpr" if name in constexprs else pointer if name.endswith("_ptr") else "i32"
        for name in names
    }
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(names)
        if name.endswith("_ptr") or name in DIVISIBLE_BY_16
    }
    source = triton.compiler.ASTSource(triton.jit(fn), signature, constexprs, attrs)
    return triton.compile(source, target=TARGET, options={"num_warps": num_warps}).asm["ptx"]


def spilled_bytes(ptx: str) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        report = subprocess.run(
            [get_ptxas(90).path, "-v", "--gpu-name=sm_90a", f.name, "-o", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    return sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", report))


def cases() -> list[tuple]:  # type: ignore[type-arg]
    acc = {"ACC_DTYPE": tl.float32}
    found = [
        (path_module._interpolate_path_kernel, {**acc, "BLOCK_SIZE": block}, warps)
        for block, warps in path_module._CONFIGS
    ]
    for block_r, warps in ig_module._CONFIGS:
        blocks = {**acc, "BLOCK_SIZE": 256, "BLOCK_R": block_r, "stride_ur": 1}
        found.append(
            (ig_module._ig_accumulate_project_kernel, {**blocks, "HAS_BASIS": True}, warps)
        )
    for block_r, warps in step_module._CONFIGS:
        blocks = {**acc, "BLOCK_SIZE": 256, "BLOCK_R": block_r, "stride_ur": 1}
        found.append((step_module._tangential_step_kernel, {**blocks, "BLOCK_N": 64}, warps))
    return [
        *found,
        (ig_module._ig_finish_kernel, {**acc, "HAS_BASIS": True, "BLOCK_N": 32, "BLOCK_C": 64}, 4),
        (step_module._sum_squares_kernel, {**acc, "BLOCK_SIZE": 256}, 4),
        (
            step_module._tangential_step_apply_kernel,
            {**acc, "NORMALIZE": True, "BLOCK_SIZE": 256, "BLOCK_N": 64},
            4,
        ),
    ]


def main(dtype: str) -> None:
    pointer = {"float32": "*fp32", "float16": "*fp16"}[dtype]
    for module in (path_module, ig_module, step_module):
        module._compiled()  # binds each module's `tl`
    for fn, constexprs, warps in cases():
        ptx = compile_ptx(fn, constexprs, pointer, warps)
        label = f"{fn.__name__} {constexprs} num_warps={warps} {dtype}"
        if spilled_bytes(ptx):
            sys.exit(f"register spills: {label}")
        streams = fn.__name__ != "_ig_finish_kernel"
        if dtype == "float32" and streams and not re.search(r"ld\.global\.v[24]", ptx):
            sys.exit(f"no vector loads: {label}")
        print("ok", label)


if __name__ == "__main__":
    main(sys.argv[1])
