"""Downstream training (METHOD.md section 7) through the engine's loop: the pretrained query
encoders with one linear classifier per branch, under the finetune, linear, semi-supervised or
from-scratch protocol; validation each epoch picks best.pt (finetune.select)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from slrpipe.config import DatasetParams, Params
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.frames import resolve_frames
from slrpipe.data.subsets import subset_key
from slrpipe.engine.checkpoints import Checkpointer, code_digest, fingerprint, load_checkpoint
from slrpipe.engine.compiling import compile_in_place
from slrpipe.engine.loop import fit, recalibrate_batchnorm, sgd_with_steps, to_device, train_loader
from slrpipe.engine.runtime import Runtime, distribute, start, stop
from slrpipe.engine.scoring import per_instance_accuracy
from slrpipe.errors import SlrpipeError
from slrpipe.finetune.baseline import run_baseline_protocol
from slrpipe.h5io import RaggedFile, file_digest
from slrpipe.model.classifier import SignClassifier, build_classifier, save_model, score_dataset

log = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "last.pt"


# The metric each `finetune.select` mode picks best.pt by; `last` takes the final epoch.
SELECTION_METRIC = {"val": "val/top1", "test": "test/top1", "last": None}


@dataclass
class FinetuneResult:
    epochs_run: int
    # How best.pt was chosen: {"select": mode, "epoch": e, "metric": "val/top1" or None, "value": v or None}.
    selected: dict | None
    last_metrics: dict[str, float]


# The library code fine-tuning runs: a change to it starts training over instead of resuming.
CODE = ("slrpipe.finetune", "slrpipe.model", "slrpipe.data.dataset", "slrpipe.data.augment", "slrpipe.engine")


def _fingerprint(params: Params, dataset_path: Path, pretrained: Path | None) -> str:
    return fingerprint(params.finetune, params.model.chosen, params.augment, file_digest(dataset_path),
                       file_digest(pretrained) if pretrained else None, code_digest(*CODE))


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


def run_finetune(params: Params, dataset_path: Path, pretrained: Path, out_dir: Path, live_dir: Path | None,
                 resume: bool = True, name: str | None = None) -> FinetuneResult:
    """Train on dataset `name` (None: the only one), preprocessed into `dataset_path`."""
    dataset = params.dataset(name)
    if params.finetune.protocol == "baseline":  # no encoder, no epochs: a logistic regression (finetune.baseline)
        return FinetuneResult(1, *run_baseline_protocol(params, dataset, dataset_path, out_dir, live_dir, BEST, LAST))
    runtime = start(params.finetune.device, params.finetune.threads, params.finetune.num_workers)
    try:
        return _train(params, dataset, dataset_path, pretrained, out_dir, live_dir, resume, runtime)
    finally:
        stop(runtime)


def pretrained_state(pretrained: Path) -> dict | None:
    """The pretrain checkpoint's state, or None when pretraining was skipped (corpus_fraction 0)."""
    if not pretrained.is_file():
        raise SlrpipeError(f"pretrained checkpoint {pretrained} not found: run the pretrain stage (dvc repro pretrain) "
                           "or use finetune.protocol: scratch")
    state = load_checkpoint(pretrained, output=True)
    if state.get("untrained"):
        log.warning("%s: %s, so the encoders start from random initialisation (as protocol scratch)",
                    pretrained, state.get("reason", "no pretraining"))
        return None
    return state


def _train(params: Params, dataset: DatasetParams, dataset_path: Path, pretrained: Path, out_dir: Path,
           live_dir: Path | None, resume: bool, runtime: Runtime) -> FinetuneResult:
    s = params.finetune
    # `augment.frames: auto` becomes a number here, once: best.pt records it for evaluate and predict.
    params = params.model_copy(update={"augment": resolve_frames(params.augment, dataset_path)})
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

    model = build_classifier(params.model.chosen, len(train_set.glosses), s)
    uses_pretraining = s.protocol != "scratch"
    if uses_pretraining and (state := pretrained_state(pretrained)) is not None:
        model.load_pretrained(state, pretrained)
    linear = s.protocol == "linear"
    if linear:
        model.encoders.requires_grad_(False)
    model.to(runtime.device)
    optimizer, scheduler = sgd_with_steps(model.parameters(), s.lr, s.sgd_momentum, s.weight_decay, s.schedule.lr_steps, s.lr_gamma)
    checkpointer = Checkpointer(out_dir / LAST, _fingerprint(params, dataset_path, pretrained if uses_pretraining else None))
    first_epoch, extra = checkpointer.resume(model, optimizer, scheduler) if resume else (0, {})
    selected = extra.get("selected")
    compile_in_place(model.encoders.values(), params.model.compile)
    trained = distribute(model, runtime)

    def train_mode() -> None:
        model.train()
        if linear:  # frozen encoders: no dropout, and BatchNorm statistics stay as pretrained
            model.encoders.eval()

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view, labels = to_device(batch["view"], runtime.device), batch["label"].to(runtime.device)
        logits = trained(view)
        loss = F.cross_entropy(logits.float(), labels)
        return loss, {"train/loss": loss, "train/top1": (logits.argmax(1) == labels).float().mean()}

    def validate(epoch: int) -> dict[str, float]:
        nonlocal selected
        if s.recalibrate_bn and not linear:
            recalibrate_batchnorm(model, DataLoader(train_views, batch_size=s.batch_size),
                                  lambda batch: model(to_device(batch["view"], runtime.device)))
        metrics: dict[str, float] = {}
        for split, scored in (("val", val_set), ("test", test_set)):
            if scored is not None and len(scored):
                metrics.update(split_accuracy(model, scored, split, runtime.device, s.batch_size))
        if replaces_best(s.select, metrics, selected, epoch == s.schedule.epochs):
            metric = SELECTION_METRIC[s.select]
            selected = {"select": s.select, "epoch": epoch, "metric": metric, "value": metrics.get(metric)}
            save_model(out_dir / BEST, model, params, dataset, train_set.glosses, preprocess, selected)
        return metrics

    def stop_early(epoch: int) -> bool:
        return s.patience is not None and selected is not None and epoch - selected["epoch"] >= s.patience

    done, metrics = fit(model, step, loader, optimizer, scheduler, checkpointer, runtime, epochs=s.schedule.epochs,
                        first_epoch=first_epoch, bf16=s.bf16, desc=s.protocol, live_dir=live_dir, validate=validate,
                        train_mode=train_mode, checkpoint_extra=lambda: {"selected": selected}, stop_early=stop_early)
    return FinetuneResult(done - first_epoch, selected, metrics)
