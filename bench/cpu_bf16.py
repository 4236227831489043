"""bfloat16 autocast on the CPU against float32 (issue 13): the same pretraining and fine-tuning of
the `small` model in each precision, on all 650 ksl13 sequences split by recording session
(preprocess.split: signer; one unseen session is the test split). Reports each run's test P-I
top-1 with its bootstrap interval, the paired difference bf16 minus float32, the last
pretraining loss, and the seconds of each stage. Run by hand, on a CPU with AVX512-BF16 or AMX
(`bf16: true` is float32 elsewhere, and the script says so); one process per run, so two runs can
share a 2-core machine a thread each:

    PYTHONPATH=$PWD python bench/cpu_bf16.py prepare --out /tmp/cpu_bf16
    PYTHONPATH=$PWD python bench/cpu_bf16.py run --out /tmp/cpu_bf16 --precision float32 --seed 0 &
    PYTHONPATH=$PWD python bench/cpu_bf16.py run --out /tmp/cpu_bf16 --precision bf16 --seed 0
    PYTHONPATH=$PWD python bench/cpu_bf16.py compare --out /tmp/cpu_bf16
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import typer
import yaml

from slrpipe.config import Params, parse_params
from slrpipe.data.preprocess import run_preprocess
from slrpipe.engine.runtime import native_bf16
from slrpipe.evaluation.evaluate import run_evaluate
from slrpipe.evaluation.metrics import paired_difference, read_scores_csv, topk_correct
from slrpipe.finetune.train import run_finetune
from slrpipe.pose.extract import run_extract
from slrpipe.pretrain.train import run_pretrain

REPO = Path(__file__).resolve().parents[1]
app = typer.Typer(add_completion=False)


def params_for(root: Path, bf16: bool, seed: int, pretrain_epochs: int, finetune_epochs: int) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    drop = lambda epochs: [epochs * 2 // 3] if epochs >= 3 else []  # noqa: E731 - the demo's drop at 2/3
    raw["datasets"] = {"ksl": {"source": "mp_data", "root": str(root)}}  # these recordings alone
    raw["pretrain"].update(corpus=["ksl"], epochs=pretrain_epochs, lr_steps=drop(pretrain_epochs), seed=seed, bf16=bf16,
                           num_workers=0, threads=1, device="cpu")
    raw["finetune"].update(targets=["ksl"], protocol="finetune", seed=seed, bf16=bf16, num_workers=0, threads=1, device="cpu")
    raw["finetune"]["schedules"]["finetune"] = {"epochs": finetune_epochs, "lr_steps": drop(finetune_epochs)}
    raw["model"]["size"] = "small"
    raw["evaluate"]["device"] = "cpu"
    return parse_params(raw, REPO / "params.yaml")


def _root_option() -> Path:
    return typer.Option(REPO.parent / "shared" / "data" / "ksl13", help="The ksl13 folder (MP_Data sessions).")


@app.command()
def prepare(out: Path = typer.Option(..., help="Working folder."), root: Path = _root_option()) -> None:
    """Extract and preprocess the 650 sequences once (the runs share them)."""
    params = params_for(root, False, 0, 1, 1)
    if not (out / "extract" / "keypoints.h5").is_file():
        run_extract(params, out / "extract", None)
    if not (out / "data" / "dataset.h5").is_file():
        run_preprocess(params, out / "extract" / "keypoints.h5", out / "data")


@app.command()
def run(out: Path = typer.Option(..., help="Working folder (after `prepare`)."), root: Path = _root_option(),
        precision: str = typer.Option(..., help="float32 or bf16"), seed: int = typer.Option(0),
        pretrain_epochs: int = typer.Option(20), finetune_epochs: int = typer.Option(30)) -> None:
    """Pretrain, fine-tune and evaluate one precision and seed; writes <out>/<precision>-<seed>/run.json."""
    if precision not in ("float32", "bf16"):
        raise typer.BadParameter("float32 or bf16", param_hint="--precision")
    if precision == "bf16" and not native_bf16(torch.device("cpu")):
        raise typer.BadParameter("this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16: true would run in float32")
    params = params_for(root, precision == "bf16", seed, pretrain_epochs, finetune_epochs)
    dataset, folder = out / "data" / "dataset.h5", out / f"{precision}-{seed}"
    started = time.perf_counter()
    pretrained = run_pretrain(params, dataset, folder / "pretrain", folder / "pretrain_live", resume=True)
    middle = time.perf_counter()
    run_finetune(params, dataset, folder / "pretrain" / "checkpoint.pt", folder / "finetune", None, resume=True)
    finetuned = time.perf_counter()
    result = run_evaluate(params, folder / "finetune" / "best.pt", dataset, folder / "eval")
    report = {"precision": precision, "seed": seed, "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs,
              "pretrain_last": {k: round(v, 4) for k, v in pretrained.last_metrics.items() if isinstance(v, float)},
              "test_top1": round(result.metrics["test/per_instance/top1"], 4),
              "ci95": [round(result.intervals["test/per_instance/top1_ci_low"], 4),
                       round(result.intervals["test/per_instance/top1_ci_high"], 4)],
              "pretrain_seconds": round(middle - started, 1), "finetune_seconds": round(finetuned - middle, 1)}
    (folder / "run.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


@app.command()
def compare(out: Path = typer.Option(..., help="Working folder with finished runs.")) -> None:
    """bf16 minus float32 per seed, and over the seeds pooled, paired over the test samples."""
    correct: dict[tuple[str, int], np.ndarray] = {}
    labels = None
    for path in sorted(out.glob("*-*/eval/scores.csv")):
        precision, seed = path.parent.parent.name.rsplit("-", 1)
        _, scores = read_scores_csv(path)
        with path.open(encoding="utf-8") as handle:
            labels = np.array([int(line.split(",", 2)[1]) for line in handle.readlines()[1:]])
        correct[(precision, int(seed))] = topk_correct(scores, labels, 1)
    seeds = sorted({seed for precision, seed in correct if (("bf16", seed) in correct and ("float32", seed) in correct)})
    report = {}
    for seed in seeds:
        difference, low, high = paired_difference(correct[("bf16", seed)], correct[("float32", seed)], labels, 2000, 0)["per_instance"]
        report[f"seed {seed}"] = {"float32": round(100 * correct[("float32", seed)].mean(), 1),
                                  "bf16": round(100 * correct[("bf16", seed)].mean(), 1),
                                  "bf16_minus_float32": round(100 * difference, 1), "ci95": [round(100 * low, 1), round(100 * high, 1)]}
    if len(seeds) > 1:  # every seed scores the same test samples: a resample draws a sample with all its seeds
        pooled_bf16 = np.concatenate([correct[("bf16", s)] for s in seeds])
        pooled_fp32 = np.concatenate([correct[("float32", s)] for s in seeds])
        samples = np.tile(np.arange(len(labels)).astype(str), len(seeds))
        difference, low, high = paired_difference(pooled_bf16, pooled_fp32, np.tile(labels, len(seeds)), 2000, 0,
                                                  groups=samples)["per_instance"]
        report["pooled"] = {"float32": round(100 * pooled_fp32.mean(), 1), "bf16": round(100 * pooled_bf16.mean(), 1),
                            "bf16_minus_float32": round(100 * difference, 1), "ci95": [round(100 * low, 1), round(100 * high, 1)]}
    print(json.dumps(report, indent=1))
    (out / "cpu_bf16.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    app()
