"""The pretraining loop: SGD with a step schedule, bf16 autocast on GPU, DDP under torchrun,
a kNN monitor, a checkpoint every epoch, resume, and dvclive metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from slrpipe.config import Params, PretrainParams
from slrpipe.data.dataset import PoseDataset
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import file_digest
from slrpipe.engine.scoring import knn_accuracy
from slrpipe.pretrain.model import Pretrainer
from slrpipe.engine.runtime import Runtime, code_digest, fingerprint, start, stop
from slrpipe.engine.loop import Checkpointer, log_epoch, open_live, sgd_with_steps, start_epoch, to_device, train_loader

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class PretrainResult:
    epochs_run: int
    last_metrics: dict[str, float]
    checkpoint: Path


# The library code pretraining runs: a change to it starts training over instead of resuming.
CODE = ("slrpipe.pretrain", "slrpipe.model", "slrpipe.pretrain.losses", "slrpipe.data.dataset", "slrpipe.data.augment", "slrpipe.engine.loop")


def settings_fingerprint(params: Params, dataset_path: Path) -> str:
    """What a checkpoint must share with this run to be resumed: settings, training data, code."""
    return fingerprint(params.pretrain, params.model.chosen, params.augment, file_digest(dataset_path), code_digest(*CODE))


@torch.no_grad()
def embed(model: Pretrainer, dataset: PoseDataset, device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    features, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        features.append(model.features(to_device(batch["view"], device)).float().cpu())
        labels.append(batch["label"])
    model.train()
    return torch.cat(features), torch.cat(labels)


KNN_METRIC = "val/knn_top1"


def knn_monitor(model: Pretrainer, params: Params, dataset_path: Path, device: torch.device) -> float | None:
    """kNN top-1 of validation samples against training samples (both un-augmented); None
    without a validation split (never the test split: the monitor guides decisions)."""
    settings = params.pretrain
    bank = PoseDataset(dataset_path, params.augment, "eval", split="train")
    probe = PoseDataset(dataset_path, params.augment, "eval", split="val")
    if len(bank) == 0 or len(probe) == 0:
        return None
    train_x, train_y = embed(model, bank, device, settings.batch_size)
    val_x, val_y = embed(model, probe, device, settings.batch_size)
    return knn_accuracy(train_x, train_y, val_x, val_y, settings.knn_neighbours, len(bank.glosses))


def fill_banks(model: Pretrainer, loader: DataLoader, runtime: Runtime, settings: PretrainParams) -> None:
    """Fill every bank with real keys of training samples before the first step (bank_init: keys).

    Every rank runs the same number of batches (the sampler gives each the same count), so the
    key gathering of several GPUs stays in step. Epoch 0 starts afresh afterwards (start_epoch
    reseeds everything), so this pass does not change what training sees."""
    largest = max(queue.size for queue in model.banks.values())
    per_batch = settings.batch_size * (runtime.world_size if settings.gather_keys else 1)
    needed = math.ceil(largest / per_batch)
    autocast = runtime.device.type == "cuda" and settings.bf16
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


def run_pretrain(params: Params, dataset_path: Path, out_dir: Path, live_dir: Path | None, resume: bool,
                 epochs: int | None = None) -> PretrainResult:
    """Pretrain for params.pretrain.epochs (or `epochs`, to stop early as if interrupted)."""
    settings = params.pretrain
    runtime = start(settings.device, settings.threads, settings.num_workers)
    try:
        return _train(params, dataset_path, out_dir, live_dir, resume, runtime, epochs)
    finally:
        stop(runtime)


def _train(params: Params, dataset_path: Path, out_dir: Path, live_dir: Path | None, resume: bool,
           runtime: Runtime, stop_after: int | None) -> PretrainResult:
    settings = params.pretrain
    torch.manual_seed(settings.seed)
    dataset = PoseDataset(dataset_path, params.augment, "pretrain", split="train", seed=settings.seed)
    if len(dataset) == 0:
        raise SlrpipeError(f"{dataset_path} has no training samples")
    loader = train_loader(dataset, settings.batch_size, settings.num_workers, settings.seed, runtime)

    model = Pretrainer(params.model.chosen, settings).to(runtime.device)
    optimizer, scheduler = sgd_with_steps(model.parameters(), settings.lr, settings.sgd_momentum, settings.weight_decay,
                                          settings.lr_steps, settings.lr_gamma)
    checkpoint_path = out_dir / CHECKPOINT
    checkpointer = Checkpointer(checkpoint_path, settings_fingerprint(params, dataset_path))
    first_epoch = checkpointer.resume(model, optimizer, scheduler)[0] if resume else 0

    trained = model
    if runtime.distributed and settings.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = model
    if runtime.distributed:
        # Banks are per-rank buffers: never overwrite them with rank 0's (authors' per-GPU banks).
        trained = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                                          broadcast_buffers=False)
    live = open_live(live_dir, first_epoch) if runtime.is_main else None
    if first_epoch == 0 and settings.bank_init == "keys":
        fill_banks(model, loader, runtime, settings)

    last_epoch = settings.epochs if stop_after is None else min(settings.epochs, stop_after)
    autocast = runtime.device.type == "cuda" and settings.bf16
    metrics: dict[str, float] = {}
    knn_off_said = False
    for epoch in range(first_epoch, last_epoch):
        start_epoch(loader, epoch)
        sums: dict[str, torch.Tensor] = {}
        seen, started = 0, time.perf_counter()
        progress = tqdm(loader, desc=f"pretrain {epoch + 1}/{settings.epochs}", unit="batch", disable=not runtime.is_main,
                        dynamic_ncols=True, leave=False)
        for batch in progress:
            view_q, view_k = to_device(batch["views"], runtime.device)
            with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=autocast):
                terms, diagnostics = trained(view_q, view_k)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            size = len(batch["label"])
            seen += size
            # Summed on the device and read once per epoch: no host-device sync per step.
            for name, value in [*((f"loss/{n}", v) for n, v in terms.items()), *diagnostics.items()]:
                sums[name] = sums.get(name, 0.0) + value.detach().float() * size
        scheduler.step()
        elapsed = time.perf_counter() - started
        metrics = {f"train/{name}": (total / max(seen, 1)).item() for name, total in sums.items()}
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["samples_per_second"] = seen * runtime.world_size / elapsed
        if (epoch + 1) % settings.knn_every == 0 or epoch + 1 == settings.epochs:
            accuracy = knn_monitor(model, params, dataset_path, runtime.device) if runtime.is_main else None
            if accuracy is not None:
                metrics[KNN_METRIC] = accuracy
            elif runtime.is_main and not knn_off_said:
                log.warning("%s has no validation split: the kNN monitor records nothing", dataset_path)
                knn_off_said = True
        if runtime.is_main:
            log.info("epoch %d/%d %s", epoch + 1, settings.epochs, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            log_epoch(live, metrics)
            checkpointer.save(epoch + 1, model, optimizer, scheduler,
                              model_size=params.model.chosen.model_dump(mode="json"),
                              pretrain=settings.model_dump(mode="json"),
                              augment=params.augment.model_dump(mode="json"),
                              glosses=dataset.glosses)
    if live is not None:
        live.end()
    return PretrainResult(last_epoch - first_epoch, metrics, checkpoint_path)
