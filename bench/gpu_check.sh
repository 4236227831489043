#!/usr/bin/env bash
# The GPU check: run this first on a machine with a CUDA GPU (issue 14).
#
#   bash bench/gpu_check.sh             # about 6-8 minutes on one GPU
#   bash bench/gpu_check.sh --dry-run   # list the steps and their commands, run nothing
#
# From a fresh copy of the repository it finds (or installs) Python with torch, then runs, each
# step under its own time limit so that one failure or hang cannot eat the others' time:
#   the CUDA tests (pytest -m cuda), one paper-size pretraining step in bf16 without and with
#   torch.compile, the loader with 1-12 workers against that step's rate, MMPose extraction on
#   CUDA (random weights), a one-GPU torchrun pretraining run (DDP over NCCL), the whole demo
#   pipeline (dvc repro) with every device set to cuda, and a compiled pretraining run.
# Every step's command, exit status, time and last lines of output are appended to one file,
# bench/RESULTS-gpu.md (RESULTS=path to change it). The demo runs in a temporary copy of the
# repository, so params.yaml, dvc.lock and data/ here are left as they are.
#
# Environment: GPU_CHECK_BUDGET (seconds for the whole script, default 470), PYTHON (the
# interpreter to use), GPU_CHECK_WORK (scratch folder, default a new one under $TMPDIR),
# GPU_CHECK_STEPS (run only these steps, by name), GPU_CHECK_DEVICE=cpu (rehearse the plumbing
# on a machine without a GPU: the same steps on the CPU, gloo instead of NCCL).
set -uo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
RESULTS=${RESULTS:-$REPO/bench/RESULTS-gpu.md}
BUDGET=${GPU_CHECK_BUDGET:-470}
DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BACKEND=nccl
[[ $DEVICE == cpu ]] && BACKEND=gloo
if ((DRY_RUN)); then
    WORK=${GPU_CHECK_WORK:-/tmp/slrpipe-gpu-check.XXXXXX}
else
    WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/slrpipe-gpu-check.XXXXXX")}
    mkdir -p "$WORK"
fi
DEMO=$WORK/demo
STARTED=$SECONDS
FAILED=()

# step NAME LIMIT COMMAND: run COMMAND (a bash string) for at most LIMIT seconds, or what is left
# of the budget; append the command, exit status, time and output tail to $RESULTS.
step() {
    local name=$1 limit=$2 command=$3
    local left=$((BUDGET - (SECONDS - STARTED)))
    if [[ -n ${GPU_CHECK_STEPS:-} && " $GPU_CHECK_STEPS " != *" $name "* ]]; then
        return 0
    fi
    if ((DRY_RUN)); then
        printf '%-18s %4ss  %s\n' "$name" "$limit" "$command"
        return 0
    fi
    ((limit > left)) && limit=$left
    {
        echo
        echo "### $name"
        echo
        echo '```'
        echo "\$ $command"
        echo '```'
    } >>"$RESULTS"
    if ((limit < 15)); then
        echo "skipped: the script's budget of ${BUDGET} s is spent" >>"$RESULTS"
        echo "== $name: skipped (budget spent)"
        FAILED+=("$name (skipped)")
        return 0
    fi
    echo "== $name (at most ${limit} s): $command"
    local log=$WORK/$name.log began=$SECONDS status
    timeout --kill-after=10 "$limit" bash -o pipefail -c "$command" >"$log" 2>&1
    status=$?
    local took=$((SECONDS - began))
    local verdict="exit status $status"
    ((status == 124 || status == 137)) && verdict="exit status $status: stopped at its limit of ${limit} s"
    ((status != 0)) && FAILED+=("$name")
    {
        echo
        echo "$verdict, ${took} s. Last lines of the output:"
        echo
        echo '```'
        # Progress bars redraw with carriage returns: keep the lines that are not one.
        tr '\r' '\n' <"$log" | grep -v -E '[0-9]+%\|' | tail -n 60 | cut -c1-400
        echo '```'
    } >>"$RESULTS"
    echo "   $verdict, ${took} s (log: $log)"
    return 0
}

# --- Python with torch: the venv beside the repository, $PYTHON, or one on PATH; else install
# as the README says (torch pinned first). A GPU machine may have no package index at all, so
# an interpreter that already has torch is always preferred to installing.
find_python() {
    local candidate
    for candidate in ${PYTHON:-} "$REPO/.venv/bin/python" python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

INSTALL='set -e
PY=$(find_python) || { python3.11 -m venv .venv && .venv/bin/pip install torch==2.13.0 && PY=.venv/bin/python; }
"$PY" -c "import slrpipe, pydantic, h5py, typer, dvc, dvclive" 2>/dev/null || "$PY" -m pip install -e ".[dev]"
"$PY" -c "import mmpose, mmcv" 2>/dev/null || "$("$PY" -c "import sys, os; print(os.path.dirname(sys.executable))")/slrpipe" install-extras mmpose mediapipe
echo "python: $PY"'

if ((!DRY_RUN)); then
    # A copy of a params file with some keys set: set_params.py IN OUT section.key=YAML-value ...
    cat >"$WORK/set_params.py" <<'EOF'
import sys
from pathlib import Path

import yaml
from ruamel.yaml import YAML

source, target, *settings = sys.argv[1:]
editor = YAML()
params = editor.load(Path(source))
for setting in settings:
    key, value = setting.split("=", 1)
    section, name = key.split(".", 1)
    params[section][name] = yaml.safe_load(value)
editor.dump(params, Path(target))
EOF
    {
        echo
        echo "## GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname)"
        echo
        echo "Commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown); \`bash bench/gpu_check.sh\`, budget ${BUDGET} s, scratch $WORK."
    } >>"$RESULTS"
    export -f find_python
    export REPO PYTHON="${PYTHON:-}"
fi

step environment 20 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; free -g | head -2; df -h . | tail -1'
step install 200 "$INSTALL"

PY=$(find_python 2>/dev/null || echo python3)
# DVC's stage commands say `python`: make it this interpreter, and its scripts (slrpipe) reachable.
# (A script, not a link: a link to a venv's python would not find the venv.)
if ((!DRY_RUN)); then
    mkdir -p "$WORK/bin" && rm -f "$WORK/bin/python" && printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" >"$WORK/bin/python" && chmod +x "$WORK/bin/python"
fi
export PATH="$WORK/bin:$(dirname "$PY"):$PATH" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
step torch 30 "$PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None); import torch.distributed as d; print(\"nccl\", d.is_nccl_available())'"

# A test module that cannot be imported here (a missing extra) is reported; the CUDA tests still run.
step cuda_tests 160 "$PY -m pytest -m cuda -q -rs -p no:cacheprovider --continue-on-collection-errors"

# One paper-size step: the GPU's rate, with and without torch.compile (the faster is the rate the loader must meet).
step step_bf16 90 "$PY bench/pretrain_step.py --size paper --batch 64 --steps 10 --bf16 --device $DEVICE --json $WORK/step.json"

# The demo's data in a temporary copy of the repository (no .git: DVC runs without SCM there).
step demo_data 90 "set -e
rm -rf $DEMO && mkdir -p $DEMO
tar -C $REPO --exclude=./.git --exclude=./.venv --exclude=./.dvc/cache --exclude=./.dvc/tmp --exclude=./data/cache -cf - . | tar -C $DEMO -xf -
printf '[core]\n    no_scm = True\n' >$DEMO/.dvc/config.local
cd $DEMO && $PY $WORK/set_params.py params.yaml params.yaml extract.device=$DEVICE pretrain.device=$DEVICE \
    finetune.device=$DEVICE evaluate.device=$DEVICE
grep -n 'device:' params.yaml
$PY -m dvc repro corpus"

step loader 90 "$PY bench/loader.py --dataset $DEMO/data/preprocess/ksl13/dataset.h5 --params $DEMO/params.yaml --workers 1 2 4 8 12 \
    --batches 40 \$(test -f $WORK/step.json && echo --step-json $WORK/step.json)"

step extract_mmpose 90 "$PY bench/extract.py --only mmpose --devices $DEVICE --mmpose-frames 64 --batch-sizes 8 32"

# DDP over NCCL on one GPU: torchrun's single process joins a process group of one (engine/runtime.py).
step torchrun_ddp 90 "set -e
cd $DEMO && mkdir -p smoke && $PY $WORK/set_params.py params.yaml smoke/params.yaml pretrain.epochs=2 'pretrain.lr_steps=[]'
$PY -m torch.distributed.run --standalone --nproc-per-node=1 -m stages.pretrain --params smoke/params.yaml --no-resume \
    --out-dir smoke/models --live-dir smoke/live >smoke/ddp.log 2>&1 || { tail -40 smoke/ddp.log; exit 1; }
grep -v 'it/s\]' smoke/ddp.log | tail -30
grep -q 'backend $BACKEND' smoke/ddp.log || { echo 'no $BACKEND process group was joined'; exit 1; }"

step dvc_repro_cuda 200 "set -e; cd $DEMO && time $PY -m dvc repro && head -40 reports/eval/ksl13/metrics.json"

# torch.compile last: its compilation time is the least predictable.
step step_bf16_compile 150 "$PY bench/pretrain_step.py --size paper --batch 64 --steps 10 --bf16 --compile --device $DEVICE --json $WORK/step_compiled.json"
step pretrain_compile 120 "set -e
cd $DEMO && mkdir -p smoke && $PY $WORK/set_params.py params.yaml smoke/compiled.yaml pretrain.epochs=2 'pretrain.lr_steps=[]' \
    model.compile=true
time $PY -m stages.pretrain --params smoke/compiled.yaml --no-resume \
    --out-dir smoke/compiled --live-dir smoke/compiled-live 2>&1 | grep -v 'it/s\]' | tail -30"

if ((!DRY_RUN)); then
    total=$((SECONDS - STARTED))
    summary="all steps passed"
    ((${#FAILED[@]})) && summary="failed: ${FAILED[*]}"
    printf '\n**Total %s s; %s.**\n' "$total" "$summary" >>"$RESULTS"
    echo "GPU check done in ${total} s; ${summary}. Results appended to $RESULTS"
fi
