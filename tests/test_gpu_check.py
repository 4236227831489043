"""bench/gpu_check.sh, the device check a GPU machine runs first: it parses, runs every step the
issue asks for under a time limit, and calls the bench scripts only with options they have."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def _dry_run(**environ) -> str:
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True, timeout=60,
                            env={**os.environ, **environ})
    return result.stdout


def test_the_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_step_the_issue_asks_for_is_there_with_a_time_limit():
    listing = _dry_run()
    steps = dict(re.findall(r"^(\w+)\s+(\d+)s  ", listing, flags=re.MULTILINE))
    for name in ("install", "cuda_tests", "step_bf16", "step_bf16_compile", "loader", "extract_mmpose", "torchrun_ddp",
                 "dvc_repro_cuda"):
        assert name in steps, name
        assert 0 < int(steps[name]) <= 200, name
    for command in ("-m pytest -m cuda", "bench/pretrain_step.py --size paper --batch 64 --steps 10 --bf16 --device cuda",
                    "--bf16 --compile --device cuda", "bench/loader.py", "--workers 1 2 4 8 12",
                    "bench/extract.py --only mmpose --devices cuda", "torch.distributed.run --standalone --nproc-per-node=1",
                    "backend nccl", "-m dvc repro", "pretrain.device=cuda", "finetune.device=cuda", "evaluate.device=cuda",
                    "model.compile=true", "pip install torch==2.13.0"):
        assert command in listing, command
    assert "params.yaml params.yaml" in listing and "cd /tmp/" in listing  # the params edit happens in the copy


def test_the_whole_check_fits_in_eight_minutes_by_default():
    text = SCRIPT.read_text()
    budget = int(re.search(r"BUDGET=\$\{GPU_CHECK_BUDGET:-(\d+)\}", text).group(1))
    assert budget <= 480
    assert "timeout --kill-after" in text  # every step is cut off at its limit


def test_a_cpu_rehearsal_checks_for_gloo_instead():
    assert "backend gloo" in _dry_run(GPU_CHECK_DEVICE="cpu")


@pytest.mark.parametrize(("script", "options"), [
    ("pretrain_step.py", ["--size", "--batch", "--steps", "--bf16", "--compile", "--device", "--json"]),
    ("loader.py", ["--dataset", "--params", "--workers", "--batches", "--step-json"]),
    ("extract.py", ["--only", "--devices", "--mmpose-frames", "--batch-sizes"]),
])
def test_the_bench_scripts_have_the_options_it_uses(script, options):
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout, f"{script} has no {option}"
