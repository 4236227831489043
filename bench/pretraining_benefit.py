"""Does pretraining help? Pretrain once, then compare against no pretraining on the test split:
fine-tuning vs training from scratch at 100 % and at a labelled fraction, a linear probe of the
pretrained vs a randomly initialised encoder, and kNN accuracy of both encoders. Every difference
comes with a 95 % paired bootstrap interval over test samples. Run by hand (minutes to hours):

    python bench/pretraining_benefit.py --dataset <dataset.h5> --params <params.yaml> --out bench/out/benefit

The params file's pretrain / finetune sections are used as they are (epochs, model size, ...);
model selection uses the validation split (finetune.select), never the test split, which is only
scored at the end. Runs already finished under --out are reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.config import Params, load_params
from slrpipe.data.dataset import PoseDataset
from slrpipe.finetune.train import run_finetune
from slrpipe.model.classifier import load_model, score_dataset
from slrpipe.engine.scoring import knn_predict
from slrpipe.pretrain.model import Pretrainer
from slrpipe.pretrain.train import embed, run_pretrain
from slrpipe.engine.checkpoints import save_checkpoint


def paired_bootstrap(a: np.ndarray, b: np.ndarray, draws: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b (per-sample 0/1 correctness) and its 95 % percentile interval, resampling test samples."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(draws, len(a)))
    differences = a[index].mean(1) - b[index].mean(1)
    return float(a.mean() - b.mean()), float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))


def with_finetune(params: Params, **changes) -> Params:
    return params.model_copy(update={"finetune": params.finetune.model_copy(update=changes)})


def correct_on_test(params: Params, model_path: Path, dataset: Path) -> np.ndarray:
    model, _ = load_model(model_path)
    test = PoseDataset(dataset, params.augment, "eval", split="test")
    scores, labels, _ = score_dataset(model, test, torch.device("cpu"), params.evaluate.batch_size)
    return (scores.argmax(1) == labels).astype(float)


def knn_test(params: Params, checkpoint: Path, dataset: Path) -> np.ndarray:
    """Per test sample: is its cosine kNN vote among the training samples right (features f_h + f_tr)?"""
    model = Pretrainer(params.model.chosen, params.pretrain)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    bank = PoseDataset(dataset, params.augment, "eval", split="train")
    test = PoseDataset(dataset, params.augment, "eval", split="test")
    device = torch.device("cpu")
    train_x, train_y = embed(model, bank, device, params.pretrain.batch_size)
    test_x, test_y = embed(model, test, device, params.pretrain.batch_size)
    predicted = knn_predict(train_x, train_y, test_x, params.pretrain.knn_neighbours, len(bank.glosses))
    return (predicted == test_y).numpy().astype(float)


def main(dataset: Path = typer.Option(..., help="dataset.h5 with train, val and test splits (e.g. data/preprocess/ksl13/dataset.h5)"),
         params: Path = Path("params.yaml"), out: Path = Path("bench/out/benefit"),
         fraction: float = 0.2, draws: int = 2000,
         pretrained: Path = typer.Option(None, help="use this pretrain checkpoint instead of pretraining here")) -> None:
    settings = load_params(params)
    if pretrained is None:
        pretrained = out / "pretrain" / "checkpoint.pt"
        run_pretrain(settings, dataset, out / "pretrain", out / "pretrain_live", resume=True)
    random_init = out / "random" / "checkpoint.pt"
    if not random_init.is_file():
        torch.manual_seed(settings.pretrain.seed)
        save_checkpoint({"model": Pretrainer(settings.model.chosen, settings.pretrain).state_dict()}, random_init)

    runs = {
        "finetune, 100 % labels": (with_finetune(settings, protocol="finetune", label_fraction=None), pretrained),
        "scratch, 100 % labels": (with_finetune(settings, protocol="scratch", label_fraction=None), pretrained),
        f"semi, {fraction:.0%} labels": (with_finetune(settings, protocol="semi", label_fraction=fraction), pretrained),
        f"scratch, {fraction:.0%} labels": (with_finetune(settings, protocol="scratch", label_fraction=fraction), pretrained),
        "linear probe, pretrained": (with_finetune(settings, protocol="linear", label_fraction=None), pretrained),
        "linear probe, random init": (with_finetune(settings, protocol="linear", label_fraction=None), random_init),
    }
    correct = {}
    for name, (run_params, checkpoint) in runs.items():
        folder = out / name.replace(" ", "_").replace(",", "").replace("%", "pct")
        # The dataset file is given directly: its settings (frame size, rate) are the first target's.
        run_finetune(run_params, dataset, checkpoint, folder, None, resume=True, name=settings.finetune.targets[0])
        correct[name] = correct_on_test(run_params, folder / "best.pt", dataset)
    correct["kNN, pretrained"] = knn_test(settings, pretrained, dataset)
    correct["kNN, random init"] = knn_test(settings, random_init, dataset)

    names = list(correct)
    lines = [f"{len(correct[names[0]])} test samples of {dataset}; 95 % intervals: paired bootstrap over test samples "
             f"({draws} draws)", "", "| run | test top-1 |", "|---|---:|"]
    lines += [f"| {name} | {100 * values.mean():.1f} |" for name, values in correct.items()]
    lines += ["", "| pretrained minus not pretrained | difference (points) | 95 % interval |", "|---|---:|---:|"]
    summary = {}
    for better, worse in [(names[0], names[1]), (names[2], names[3]), (names[4], names[5]), (names[6], names[7])]:
        mean, low, high = paired_bootstrap(correct[better], correct[worse], draws)
        summary[f"{better} - {worse}"] = {"difference": mean, "ci_low": low, "ci_high": high}
        lines.append(f"| {better} vs {worse.split(', ')[-1]} | {100 * mean:+.1f} | [{100 * low:+.1f}, {100 * high:+.1f}] |")
    text = "\n".join(lines)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"accuracy": {k: float(v.mean()) for k, v in correct.items()},
                                                   "differences": summary}, indent=2))


if __name__ == "__main__":
    typer.run(main)
