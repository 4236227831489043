"""Pretraining through the engine's loop: the Pretrainer's loss step, DDP under torchrun, banks
filled before the first step when asked, and a kNN monitor on the validation split."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from slrpipe.config import Params, PretrainParams
from slrpipe.data.corpus import Corpus
from slrpipe.data.dataset import PoseDataset, corpus_dataset
from slrpipe.data.frames import resolve_frames
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import write_json
from slrpipe.engine.checkpoints import Checkpointer, code_digest, fingerprint, save_checkpoint
from slrpipe.engine.compiling import compile_in_place
from slrpipe.engine.loop import fit, recalibrate_batchnorm, run_eval, sgd_with_steps, start_epoch, to_device, train_loader
from slrpipe.engine.runtime import Runtime, distribute, start, stop, use_bf16
from slrpipe.engine.scoring import knn_accuracy
from slrpipe.pretrain.model import Pretrainer

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class PretrainResult:
    epochs_run: int
    last_metrics: dict[str, float]
    checkpoint: Path


# The library code pretraining runs: a change to it starts training over instead of resuming.
CODE = ("slrpipe.pretrain", "slrpipe.model", "slrpipe.data.dataset", "slrpipe.data.augment", "slrpipe.engine")


def settings_fingerprint(params: Params, corpus: Corpus) -> str:
    """What a checkpoint must share with this run to be resumed: settings, training data, code."""
    return fingerprint(params.pretrain, params.model.chosen, params.augment, corpus.digest(), code_digest(*CODE))


def embed(model: Pretrainer, dataset: PoseDataset, device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query encoders' sequence features (eval mode) and the labels of every sample."""
    out = run_eval(model, dataset, batch_size,
                   lambda batch: {"features": model.features(to_device(batch["view"], device)), "labels": batch["label"]})
    return out["features"], out["labels"].long()


KNN_METRIC = "val/knn_top1"


def knn_monitor(model: Pretrainer, params: Params, dataset_path: Path, device: torch.device) -> float | None:
    """kNN top-1 of validation samples against training samples (both un-augmented) of one
    labelled dataset; None without a validation split (never the test split: the monitor
    guides decisions)."""
    settings = params.pretrain
    bank = PoseDataset(dataset_path, params.augment, "eval", split="train")
    probe = PoseDataset(dataset_path, params.augment, "eval", split="val")
    if len(bank) == 0 or len(probe) == 0:
        return None
    # Training goes on with its own running averages: the recalibrated ones are put back after.
    # (The buffers, not a copy of the model: at the paper's size the encoders are 200 M parameters.)
    saved = {name: buffer.clone() for name, buffer in model.query.named_buffers()} if settings.knn_recalibrate_bn else {}
    if saved:
        recalibrate_batchnorm(model.query, DataLoader(bank, batch_size=settings.batch_size),
                              lambda batch: model.features(to_device(batch["view"], device)))
    try:
        train_x, train_y = embed(model, bank, device, settings.batch_size)
        val_x, val_y = embed(model, probe, device, settings.batch_size)
    finally:
        buffers = dict(model.query.named_buffers())
        for name, value in saved.items():
            buffers[name].copy_(value)
    return knn_accuracy(train_x, train_y, val_x, val_y, settings.knn_neighbours, len(bank.glosses))


def fill_banks(model: Pretrainer, loader: DataLoader, runtime: Runtime, settings: PretrainParams) -> None:
    """Fill every bank with real keys of training samples before the first step (bank_init: keys).

    Every rank runs the same number of batches (the sampler gives each the same count), so the
    key gathering of several GPUs stays in step. Epoch 0 starts afresh afterwards (start_epoch
    reseeds everything), so this pass does not change what training sees."""
    largest = max(queue.size for queue in model.queues())
    per_batch = settings.batch_size * (runtime.world_size if settings.gather_keys else 1)
    needed = math.ceil(largest / per_batch)
    autocast = use_bf16(runtime, settings.bf16, "pretrain (bank fill)")  # the one rule fit's steps follow
    start_epoch(loader, 0)
    batches = 0
    for batch in loader:
        if batches == needed:
            break
        with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=autocast):
            model.enqueue_keys(to_device(batch["views"][1], runtime.device))
        batches += 1
    if batches < needed:
        log.warning("the training set fills only %d of the %d bank entries with real keys: the rest stay random "
                    "(set pretrain.bank_size below the number of training samples)", batches * per_batch, largest)


# What pretraining writes in place of a checkpoint when pretrain.corpus_fraction is 0:
# fine-tuning reads it and starts from random initialisation (slrpipe.model.classifier).
UNTRAINED = {"untrained": True, "reason": "pretrain.corpus_fraction is 0: no pretraining"}


def run_pretrain(params: Params, corpus: Corpus | Path, out_dir: Path, live_dir: Path | None, resume: bool,
                 epochs: int | None = None) -> PretrainResult:
    """Pretrain on `corpus` (a dataset.h5 path: that dataset's training split) for
    params.pretrain.epochs (or `epochs`, to stop early as if interrupted)."""
    settings = params.pretrain
    if settings.corpus_fraction == 0:
        return _no_pretraining(out_dir, live_dir)
    runtime = start(settings.device, settings.threads, settings.num_workers)
    try:
        return _train(params, corpus, out_dir, live_dir, resume, runtime, epochs)
    finally:
        stop(runtime)


def _no_pretraining(out_dir: Path, live_dir: Path | None) -> PretrainResult:
    """Table VI's 0 %: a checkpoint that says so (fine-tuning then starts from random weights),
    and empty curves, so the stage's outputs exist as with any fraction."""
    log.warning("pretrain.corpus_fraction is 0: no pretraining; fine-tuning will start from random initialisation")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(UNTRAINED, out_dir / CHECKPOINT)
    if live_dir is not None:
        (live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        write_json(live_dir / "metrics.json", {})
    return PretrainResult(0, {}, out_dir / CHECKPOINT)


def _train(params: Params, corpus: Corpus | Path, out_dir: Path, live_dir: Path | None, resume: bool,
           runtime: Runtime, stop_after: int | None) -> PretrainResult:
    settings = params.pretrain
    if isinstance(corpus, Path):
        corpus = Corpus.of_file(corpus)
    # `augment.frames: auto` becomes a number here, once (the corpus's median length); the checkpoint records it.
    params = params.model_copy(update={"augment": resolve_frames(params.augment, corpus.members())})
    torch.manual_seed(settings.seed)
    dataset = corpus_dataset(corpus.members(), params.augment, "pretrain", settings.seed)
    if len(dataset) == 0:
        raise SlrpipeError(f"the pretraining corpus ({', '.join(corpus.files)}) has no training samples")
    loader = train_loader(dataset, settings.batch_size, settings.num_workers, settings.seed, runtime)

    model = Pretrainer(params.model.chosen, settings).to(runtime.device)
    optimizer, scheduler = sgd_with_steps(model.parameters(), settings.lr, settings.sgd_momentum, settings.weight_decay,
                                          settings.lr_steps, settings.lr_gamma)
    checkpoint_path = out_dir / CHECKPOINT
    checkpointer = Checkpointer(checkpoint_path, settings_fingerprint(params, corpus))
    first_epoch = checkpointer.resume(model, optimizer, scheduler)[0] if resume else 0

    if runtime.distributed and settings.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # The query and key branches (encoder and heads), not the Pretrainer: the banks and the
    # losses around them stay eager (slrpipe/engine/compiling.py).
    compile_in_place([branches[m] for branches in (model.query, model.key) for m in model.modalities], params.model.compile)
    # Banks are per-rank buffers: never overwrite them with rank 0's (authors' per-GPU banks).
    trained = distribute(model, runtime, broadcast_buffers=False)
    if first_epoch == 0 and settings.bank_init == "keys":
        fill_banks(model, loader, runtime, settings)

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view_q, view_k = to_device(batch["views"], runtime.device)
        terms, diagnostics = trained(view_q, view_k)
        return terms["total"], {**{f"train/loss/{name}": value for name, value in terms.items()},
                                **{f"train/{name}": value for name, value in diagnostics.items()}}

    knn_off_said = False

    def validate(epoch: int) -> dict[str, float]:
        nonlocal knn_off_said
        if epoch % settings.knn_every and epoch != settings.epochs:
            return {}
        accuracy = None if corpus.monitor is None else knn_monitor(model, params, corpus.monitor, runtime.device)
        if accuracy is None and not knn_off_said:
            log.warning("%s has no validation split: the kNN monitor records nothing", corpus.monitor or "the corpus")
            knn_off_said = True
        return {} if accuracy is None else {KNN_METRIC: accuracy}

    extra = {"model_size": params.model.chosen.model_dump(mode="json"), "pretrain": settings.model_dump(mode="json"),
             "augment": params.augment.model_dump(mode="json"),
             "corpus": {name: len(corpus.ids(name)) for name in corpus.files}}
    _, metrics = fit(model, step, loader, optimizer, scheduler, checkpointer, runtime, epochs=settings.epochs,
                  first_epoch=first_epoch, bf16=settings.bf16, desc="pretrain", live_dir=live_dir, validate=validate,
                  checkpoint_extra=lambda: extra, stop_after=stop_after)
    last_epoch = settings.epochs if stop_after is None else min(settings.epochs, stop_after)
    return PretrainResult(max(last_epoch - first_epoch, 0), metrics, checkpoint_path)
