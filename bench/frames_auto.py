"""`augment.frames` fixed 64 vs `auto` (issue 13) on the demo: pretraining and fine-tuning of the
`small` model with each, then P-I top-1 on the demo's test split (a recording session unseen in
training) with its bootstrap interval, the paired difference, and the time of each stage. Run by
hand (minutes on 2 cores; --pretrain-epochs / --finetune-epochs shorten the schedules):

    PYTHONPATH=$PWD python bench/frames_auto.py --out /tmp/frames_auto

The dataset is the demo's preprocess output (data/preprocess/ksl13/dataset.h5 of a `dvc repro`, or --dataset).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import typer
import yaml

from slrpipe.config import Params, parse_params
from slrpipe.data.frames import median_train_length
from slrpipe.evaluation.evaluate import run_evaluate
from slrpipe.evaluation.metrics import paired_difference, read_scores_csv, topk_correct
from slrpipe.finetune.train import run_finetune
from slrpipe.pretrain.train import run_pretrain

REPO = Path(__file__).resolve().parents[1]


def params_for(frames: int | str, pretrain_epochs: int, finetune_epochs: int, threads: int) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    step = lambda epochs: [epochs * 2 // 3] if epochs >= 3 else []  # noqa: E731 - the demo's drop at 2/3
    raw["augment"]["frames"] = frames
    # The demo's labelled dataset alone (pretraining on its training split, as measured in bench/RESULTS.md).
    raw["datasets"] = {"ksl13": raw["datasets"]["ksl13"]}
    raw["pretrain"]["corpus"] = raw["finetune"]["targets"] = ["ksl13"]
    raw["pretrain"].update(epochs=pretrain_epochs, lr_steps=step(pretrain_epochs), num_workers=0, threads=threads, device="cpu")
    raw["finetune"].update(num_workers=0, threads=threads, device="cpu")
    raw["finetune"]["schedules"]["finetune"] = {"epochs": finetune_epochs, "lr_steps": step(finetune_epochs)}
    raw["evaluate"]["device"] = "cpu"
    return parse_params(raw, REPO / "params.yaml")


def interleaved_step_seconds(params: Params, dataset: Path, frame_counts: list[int], rounds: int = 6) -> dict[int, float]:
    """Median seconds of one fine-tuning step (forward + backward, a training batch of the demo) at
    each frame count, the counts alternating round by round so a busy shared machine slows all alike."""
    from torch.nn import functional as F
    from torch.utils.data import DataLoader

    from slrpipe.data.dataset import PoseDataset
    from slrpipe.model.classifier import build_classifier

    model = build_classifier(params.model.chosen, 13, params.finetune)
    batches = {}
    for frames in frame_counts:
        settings = params.augment.model_copy(update={"frames": frames})
        data = PoseDataset(dataset, settings, "train", split="train", seed=0)
        batches[frames] = next(iter(DataLoader(data, batch_size=params.finetune.batch_size)))
    times: dict[int, list[float]] = {frames: [] for frames in frame_counts}
    for _ in range(rounds):
        for frames in frame_counts:
            started = time.perf_counter()
            loss = F.cross_entropy(model(batches[frames]["view"]), batches[frames]["label"])
            loss.backward()
            times[frames].append(time.perf_counter() - started)
    return {frames: round(float(np.median(values[1:])), 3) for frames, values in times.items()}


def main(out: Path = typer.Option(..., help="Working folder."),
         dataset: Path = typer.Option(REPO / "data" / "preprocess" / "ksl13" / "dataset.h5", help="The demo's dataset.h5."),
         pretrain_epochs: int = typer.Option(30), finetune_epochs: int = typer.Option(30),
         threads: int = typer.Option(2)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    local = out / "dataset.h5"
    shutil.copyfile(dataset, local)
    report: dict = {"median_train_length": median_train_length(local), "pretrain_epochs": pretrain_epochs,
                    "finetune_epochs": finetune_epochs, "threads": threads}
    correct, labels = {}, None
    for frames in (64, "auto"):
        params = params_for(frames, pretrain_epochs, finetune_epochs, threads)
        folder = out / str(frames)
        started = time.perf_counter()
        run_pretrain(params, local, folder / "pretrain", None, resume=False)
        pretrained = time.perf_counter()
        run_finetune(params, local, folder / "pretrain" / "checkpoint.pt", folder / "finetune", None, resume=False)
        finetuned = time.perf_counter()
        result = run_evaluate(params, folder / "finetune" / "best.pt", local, folder / "eval")
        recorded = torch.load(folder / "finetune" / "best.pt", weights_only=True)["augment"]["frames"]
        ids, scores = read_scores_csv(folder / "eval" / "scores.csv")
        with (folder / "eval" / "scores.csv").open(encoding="utf-8") as handle:
            labels = np.array([int(line.split(",", 2)[1]) for line in handle.readlines()[1:]])
        correct[str(frames)] = topk_correct(scores, labels, 1)
        report[str(frames)] = {
            "frames_recorded": recorded,
            "test_top1": round(result.metrics["test/per_instance/top1"], 4),
            "ci95": [round(result.intervals["test/per_instance/top1_ci_low"], 4),
                     round(result.intervals["test/per_instance/top1_ci_high"], 4)],
            "pretrain_seconds": round(pretrained - started, 1), "finetune_seconds": round(finetuned - pretrained, 1)}
        print(json.dumps({str(frames): report[str(frames)]}), flush=True)
    resolved = torch.load(out / "auto" / "finetune" / "best.pt", weights_only=True)["augment"]["frames"]
    report["step_seconds"] = interleaved_step_seconds(params_for(64, 1, 1, threads), local, [64, resolved])
    difference, low, high = paired_difference(correct["auto"], correct["64"], labels, 2000, 0)["per_instance"]
    report["auto_minus_64"] = {"points": round(100 * difference, 1), "ci95": [round(100 * low, 1), round(100 * high, 1)]}
    print(json.dumps(report, indent=1))
    (out / "frames_auto.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
