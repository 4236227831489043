"""Downstream training (METHOD.md section 7): the pretrained query encoders with one linear
classifier per branch, under the finetune, linear, semi-supervised or from-scratch protocol."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.config import FinetuneParams, ModelSize, Params
from slrpipe.data.dataset import PoseDataset
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile, file_digest
from slrpipe.evaluation.metrics import per_instance_accuracy
from slrpipe.model import SignEncoder, branches_of, part_of, parts_of
from slrpipe.engine.runtime import Runtime, code_digest, fingerprint, save_checkpoint, start, stop
from slrpipe.data.subsets import subset_key
from slrpipe.engine.loop import (
    Checkpointer,
    log_epoch,
    open_live,
    recalibrate_batchnorm,
    sgd_with_steps,
    start_epoch,
    to_device,
    train_loader,
)

log = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "last.pt"
MODEL_FORMAT = "slrpipe.classifier/1"


class SignClassifier(nn.Module):
    """Per branch: encoder of the chosen parts -> f (their sum) -> linear classifier; logits combined."""

    def __init__(self, size: ModelSize, classes: int, branches: tuple[str, ...], parts: tuple[str, ...], combine: str) -> None:
        super().__init__()
        self.branches, self.parts, self.combine = branches, parts, combine
        self.encoders = nn.ModuleDict({m: SignEncoder(size, parts) for m in branches})
        self.classifiers = nn.ModuleDict({m: nn.Linear(size.width, classes) for m in branches})

    def features(self, view: dict) -> dict[str, torch.Tensor]:
        return {m: sum(self.encoders[m](view[m], view["mask"]).values()) for m in self.branches}

    def classify(self, view: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Combined logits and each branch's sequence feature."""
        features = self.features(view)
        logits = torch.stack([self.classifiers[m](f) for m, f in features.items()]).sum(0)
        return (logits / len(features) if self.combine == "mean" else logits), features

    def forward(self, view: dict) -> torch.Tensor:
        return self.classify(view)[0]

    def load_pretrained(self, state: dict, source: Path) -> None:
        """Copy the pretrain checkpoint's query encoders (key encoders and heads are dropped), only
        the parts this model uses: a hand-only model takes the hand weights of a two-part checkpoint."""
        for m in self.branches:
            prefix = f"query.{m}.encoder."
            weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
            if not weights:
                raise SlrpipeError(f"{source} has no {m} encoder: pretrain with branches both or {m}")
            missing = [part for part in self.parts if not any(part_of(key) == part for key in weights)]
            if missing:
                raise SlrpipeError(f"{source}: its {m} encoder has no {missing[0]} part: pretrain with parts both or "
                                   f"{missing[0]}, or fine-tune with parts {'/'.join(sorted({part_of(k) for k in weights}))}")
            try:
                self.encoders[m].load_state_dict({k: v for k, v in weights.items() if part_of(k) in self.parts})
            except RuntimeError as error:
                raise SlrpipeError(f"{source}: its {m} encoder does not fit model.size ({str(error).splitlines()[0]})") from None


def build_classifier(size: ModelSize, classes: int, settings: FinetuneParams) -> SignClassifier:
    return SignClassifier(size, classes, branches_of(settings.branches), parts_of(settings.parts), settings.combine)


# The metric each `finetune.select` mode picks best.pt by; `last` takes the final epoch.
SELECTION_METRIC = {"val": "val/top1", "test": "test/top1", "last": None}


@dataclass
class FinetuneResult:
    epochs_run: int
    # How best.pt was chosen: {"select": mode, "epoch": e, "metric": "val/top1" or None, "value": v or None}.
    selected: dict | None
    last_metrics: dict[str, float]


# The library code fine-tuning runs: a change to it starts training over instead of resuming.
CODE = ("slrpipe.finetune.train", "slrpipe.model", "slrpipe.data.dataset", "slrpipe.data.augment", "slrpipe.engine.loop")


def _fingerprint(params: Params, dataset_path: Path, pretrained: Path | None) -> str:
    return fingerprint(params.finetune, params.model.chosen, params.augment, file_digest(dataset_path),
                       file_digest(pretrained) if pretrained else None, code_digest(*CODE))


@torch.no_grad()
def score_dataset(model: SignClassifier, dataset: PoseDataset, device: torch.device,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Softmax scores (N, C), labels (N,) and each branch's sequence features (N, W) of every
    sample in dataset order, in eval mode (validation during training and the evaluate stage)."""
    was_training = model.training
    model.eval()
    scores, labels, features = [], [], {}
    for batch in DataLoader(dataset, batch_size=batch_size):
        logits, per_branch = model.classify(to_device(batch["view"], device))
        scores.append(F.softmax(logits.float(), dim=1).cpu())
        labels.append(batch["label"])
        for branch, value in per_branch.items():
            features.setdefault(branch, []).append(value.float().cpu())
    model.train(was_training)
    return (torch.cat(scores).numpy(), torch.cat(labels).numpy(),
            {branch: torch.cat(values).numpy() for branch, values in features.items()})


def split_accuracy(model: SignClassifier, dataset: PoseDataset, split: str, device: torch.device,
                   batch_size: int) -> dict[str, float]:
    """Top-1 (and top-5 with at least 5 classes) on one split, named by it: {"val/top1": ...}."""
    scores, labels, _ = score_dataset(model, dataset, device, batch_size)
    return {f"{split}/top{k}": per_instance_accuracy(scores, labels, k) for k in (1, 5) if k <= scores.shape[1]}


def replaces_best(select: str, metrics: dict[str, float], selected: dict | None, final_epoch: bool) -> bool:
    """Whether this epoch's weights become best.pt under `finetune.select`."""
    metric = SELECTION_METRIC[select]
    if metric is None:
        return final_epoch
    return selected is None or metrics[metric] > selected["value"]


def _set_mode(model: SignClassifier, linear: bool) -> None:
    model.train()
    if linear:  # frozen encoders: no dropout, and BatchNorm statistics stay as pretrained
        model.encoders.eval()


def run_finetune(params: Params, dataset_path: Path, pretrained: Path, out_dir: Path, live_dir: Path | None,
                 resume: bool = True) -> FinetuneResult:
    runtime = start(params.finetune.device, params.finetune.threads, params.finetune.num_workers)
    try:
        return _train(params, dataset_path, pretrained, out_dir, live_dir, resume, runtime)
    finally:
        stop(runtime)


def _train(params: Params, dataset_path: Path, pretrained: Path, out_dir: Path, live_dir: Path | None, resume: bool,
           runtime: Runtime) -> FinetuneResult:
    s = params.finetune
    torch.manual_seed(s.seed)
    subset = subset_key(s.label_fraction) if s.label_fraction is not None else None
    mode = "train" if s.augment else "eval"
    train_set = PoseDataset(dataset_path, params.augment, mode, split="train", subset=subset, seed=s.seed)
    if len(train_set) == 0:
        raise SlrpipeError(f"{dataset_path} has no training samples")
    val_set = PoseDataset(dataset_path, params.augment, "eval", split="val")
    # The training samples as evaluation sees them: what BatchNorm statistics are recomputed on.
    train_views = PoseDataset(dataset_path, params.augment, "eval", split="train", subset=subset)
    if s.select == "val" and len(val_set) == 0:
        raise SlrpipeError(f"{dataset_path} has no validation split, which finetune.select: val needs to pick best.pt: "
                           "rerun preprocess with preprocess.val_fraction above 0, or set finetune.select: last")
    # The authors' protocol, only when asked for by name: the test split picks best.pt.
    test_set = PoseDataset(dataset_path, params.augment, "eval", split="test") if s.select == "test" else None
    if test_set is not None and len(test_set) == 0:
        raise SlrpipeError(f"{dataset_path} has no test samples, which finetune.select: test needs")
    with RaggedFile(dataset_path) as dataset_file:
        preprocess = dataset_file.attr("preprocess")
    loader = train_loader(train_set, s.batch_size, s.num_workers, s.seed, runtime)

    size = params.model.chosen
    model = build_classifier(size, len(train_set.glosses), s)
    uses_pretraining = s.protocol != "scratch"
    if uses_pretraining:
        if not pretrained.is_file():
            raise SlrpipeError(f"pretrained checkpoint {pretrained} not found: run the pretrain stage (dvc repro pretrain) "
                               "or use finetune.protocol: scratch")
        model.load_pretrained(load_checkpoint(pretrained, output=True), pretrained)
    linear = s.protocol == "linear"
    if linear:
        model.encoders.requires_grad_(False)
    model.to(runtime.device)
    optimizer, scheduler = sgd_with_steps(model.parameters(), s.lr, s.sgd_momentum, s.weight_decay, s.schedule.lr_steps, s.lr_gamma)
    checkpointer = Checkpointer(out_dir / LAST, _fingerprint(params, dataset_path, pretrained if uses_pretraining else None))
    first_epoch, extra = checkpointer.resume(model, optimizer, scheduler) if resume else (0, {})
    selected = extra.get("selected")
    trained = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None) \
        if runtime.distributed else model
    live = open_live(live_dir, first_epoch) if runtime.is_main else None
    autocast = runtime.device.type == "cuda" and s.bf16

    metrics: dict[str, float] = {}
    for epoch in range(first_epoch, s.schedule.epochs):
        start_epoch(loader, epoch)
        _set_mode(model, linear)
        loss_sum, correct, seen, started = 0.0, 0, 0, time.perf_counter()
        for batch in tqdm(loader, desc=f"{s.protocol} {epoch + 1}/{s.schedule.epochs}", unit="batch",
                          disable=not runtime.is_main, dynamic_ncols=True, leave=False):
            view, labels = to_device(batch["view"], runtime.device), batch["label"].to(runtime.device)
            with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = trained(view)
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        scheduler.step()
        metrics = {"train/loss": loss_sum / seen, "train/top1": correct / seen, "lr": optimizer.param_groups[0]["lr"],
                   "samples_per_second": seen * runtime.world_size / (time.perf_counter() - started)}
        if not runtime.is_main:
            continue
        if s.recalibrate_bn and not linear:
            recalibrate_batchnorm(model, DataLoader(train_views, batch_size=s.batch_size),
                                  lambda batch: model(to_device(batch["view"], runtime.device)))
        for split, scored in (("val", val_set), ("test", test_set)):
            if scored is not None and len(scored):
                metrics.update(split_accuracy(model, scored, split, runtime.device, s.batch_size))
        if replaces_best(s.select, metrics, selected, epoch + 1 == s.schedule.epochs):
            metric = SELECTION_METRIC[s.select]
            selected = {"select": s.select, "epoch": epoch + 1, "metric": metric, "value": metrics.get(metric)}
            save_model(out_dir / BEST, model, params, train_set.glosses, preprocess, selected)
        log.info("epoch %d/%d %s", epoch + 1, s.schedule.epochs, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        log_epoch(live, metrics)
        checkpointer.save(epoch + 1, model, optimizer, scheduler, selected=selected)
    if live is not None:
        live.end()
    return FinetuneResult(s.schedule.epochs - first_epoch, selected, metrics)


def save_model(path: Path, model: SignClassifier, params: Params, glosses: list[str], preprocess: dict,
               selected: dict) -> None:
    """The deployable model file: weights plus everything needed to prepare new inputs the same way."""
    save_checkpoint({
        "format": MODEL_FORMAT,
        "model": model.state_dict(),
        "model_size": params.model.chosen.model_dump(mode="json"),
        "finetune": params.finetune.model_dump(mode="json"),
        "glosses": list(glosses),
        "preprocess": preprocess,
        "augment": params.augment.model_dump(mode="json"),
        "dataset": {"frame_size": list(params.dataset.frame_size), "fps": params.dataset.fps},
        "epoch": selected["epoch"],
        "selected": selected,  # how this epoch was chosen (finetune.select)
    }, path)


def load_model(path: Path) -> tuple[SignClassifier, dict]:
    """A model file written by `save_model` -> (classifier in eval mode, the file's metadata)."""
    state = load_checkpoint(path)
    if state.get("format") != MODEL_FORMAT:
        raise SlrpipeError(f"{path} is not a slrpipe model file (run the finetune stage to make one)")
    settings = FinetuneParams.model_validate(state["finetune"])
    model = build_classifier(ModelSize.model_validate(state["model_size"]), len(state["glosses"]), settings)
    own = model.state_dict()
    # Model files from before encoders were built with only their parts also hold the unused part's weights.
    model.load_state_dict({k: v for k, v in state["model"].items() if k in own or not k.startswith("encoders.")})
    model.eval()
    return model, state
