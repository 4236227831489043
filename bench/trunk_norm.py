"""Frame vs body trunk normalization (issue 13) on all 650 ksl13 sequences, split by recording
session (preprocess.split: signer, one unseen session is the test split). For each form: the same
scratch training of the `small` model, then top-1 on the test split, with a paired bootstrap
interval of the difference. Also prints where the shoulders sit in the frame per session, which
is what the body form takes out. Run by hand (minutes):

    PYTHONPATH=$PWD python bench/trunk_norm.py --out /tmp/trunk13 --epochs 8

Extraction and each form's preprocessing are reused from --out when already there.
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
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.preprocess import run_preprocess, shoulder_frame
from slrpipe.finetune.train import run_finetune
from slrpipe.h5io import RaggedFile
from slrpipe.model.classifier import load_model, score_dataset
from slrpipe.pose.extract import run_extract

REPO = Path(__file__).resolve().parents[1]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b (per-sample 0/1 correctness) and its 95 % percentile interval over test samples."""
    index = np.random.default_rng(seed).integers(0, len(a), size=(draws, len(a)))
    differences = a[index].mean(1) - b[index].mean(1)
    return float(a.mean() - b.mean()), float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))


def params_for(root: Path, trunk_norm: str, epochs: int, frames: int) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    overrides = {
        "preprocess": {"trunk_norm": trunk_norm},
        "augment": {"frames": frames},
        "model": {"size": "small"},
        "pretrain": {"corpus": ["ksl"]},
        "finetune": {"targets": ["ksl"], "protocol": "scratch", "schedules": {name: {"epochs": epochs, "lr_steps": []} for name in
                                                          ("finetune", "linear", "semi", "scratch")},
                     "num_workers": 0, "threads": 1, "device": "cpu"},
        "evaluate": {"device": "cpu"},
    }
    for key, values in overrides.items():
        raw.setdefault(key, {}).update(values)
    raw["datasets"] = {"ksl": {"source": "mp_data", "root": str(root)}}  # these recordings alone
    return parse_params(raw, REPO / "params.yaml")


def shoulders_per_session(keypoints: Path, threshold: float) -> dict[str, dict[str, float]]:
    """Median shoulder height and width as fractions of the frame, per session (signer group)."""
    found: dict[str, list[tuple[float, float]]] = {}
    with RaggedFile(keypoints) as source:
        signers, sizes = source.column("signer"), source.column("frame_size")
        for i in range(len(source)):
            placed = shoulder_frame(source.frames("keypoints", i), threshold)
            if placed is not None:
                centre, width = placed
                found.setdefault(signers[i], []).append((centre[1] / sizes[i][1], width / sizes[i][0]))
    return {s: {"shoulder_y": round(float(np.median([v[0] for v in values])), 3),
                "shoulder_width": round(float(np.median([v[1] for v in values])), 3), "samples": len(values)}
            for s, values in sorted(found.items())}


def main(out: Path = typer.Option(..., help="Working folder."),
         root: Path = typer.Option(REPO.parent / "shared" / "data" / "ksl13", help="The ksl13 folder."),
         epochs: int = typer.Option(8, help="Scratch training epochs per form."),
         frames: int = typer.Option(32, help="augment.frames (ksl13 clips have 30 frames).")) -> None:
    torch.set_num_threads(1)
    keypoints = out / "extract" / "keypoints.h5"
    if not keypoints.is_file():
        run_extract(params_for(root, "frame", epochs, frames), out / "extract", None)
    report: dict = {"sessions": shoulders_per_session(keypoints, 0.5), "epochs": epochs, "frames": frames}
    correct = {}
    for form in ("frame", "body"):
        params = params_for(root, form, epochs, frames)
        dataset = out / form / "dataset.h5"
        if not dataset.is_file():
            result = run_preprocess(params, keypoints, out / form)
            report[f"{form}_fallback"] = len(result.trunk_fallback)
        started = time.perf_counter()
        run_finetune(params, dataset, out / "none.pt", out / form / "model", None, resume=False)
        model, _ = load_model(out / form / "model" / "best.pt")
        test = PoseDataset(dataset, params.augment, "eval", split="test")
        scores, labels, _ = score_dataset(model, test, torch.device("cpu"), params.evaluate.batch_size)
        correct[form] = (scores.argmax(1) == labels).astype(float)
        report[form] = {"test_top1": round(float(correct[form].mean()), 4), "test_samples": len(labels),
                        "seconds": round(time.perf_counter() - started)}
    difference, low, high = paired_bootstrap(correct["body"], correct["frame"])
    report["body_minus_frame"] = {"points": round(100 * difference, 1), "ci95": [round(100 * low, 1), round(100 * high, 1)]}
    print(json.dumps(report, indent=1))
    (out / "trunk_norm.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
