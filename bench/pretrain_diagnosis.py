"""Issue 15's diagnosis harness: pretrain with settings overridden from the command line and print,
per epoch, every loss term, validation kNN top-1, and for each branch and part the positive-pair
and negative-pair cosine, alignment and uniformity of two augmented views of the validation
samples (eval mode, and positive / negative cosine in train mode, prefixed T). Run by hand:

    python bench/pretrain_diagnosis.py NAME '{"epochs": 8, "pretrain": {"use_knowledge_transfer": false}}' \
        --params <params.yaml> --dataset <dataset.h5>

The second argument overrides params sections (epochs is a shortcut for pretrain.epochs;
"hacks": ["input_bn" | "center" | "final_ln" | "head_bn"] try encoder variants that are not
options of slrpipe: an input BatchNorm over the joints' coordinates, coordinates centred on 0.5,
a final LayerNorm after the Transformers, BatchNorm in the pretraining heads). One JSON line per
epoch; all lines also go to bench/out/diagnosis/NAME.json.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
import typer
import yaml
from torch import nn
from torch.utils.data import DataLoader

import slrpipe.model.encoder as encoder_module
import slrpipe.model.gcn as gcn_module
import slrpipe.pretrain.model as pretrain_module
from slrpipe.config import parse_params
from slrpipe.data.augment import mask_of
from slrpipe.data.dataset import PoseDataset
from slrpipe.engine.scoring import knn_accuracy
from slrpipe.pretrain.train import embed
from slrpipe.engine.loop import sgd_with_steps


def _apply_hacks(hacks: list[str]) -> None:
    if "final_ln" in hacks:
        original = encoder_module.TimeTransformer.__init__

        def with_norm(self, width, *args, **kwargs):
            original(self, width, *args, **kwargs)
            self.transformer.norm = nn.LayerNorm(width)
        encoder_module.TimeTransformer.__init__ = with_norm
    if "input_bn" in hacks or "center" in hacks:
        init, forward = gcn_module.PartGCN.__init__, gcn_module.PartGCN.forward

        def init_with_norm(self, joints, *args, **kwargs):
            init(self, joints, *args, **kwargs)
            self.input_norm = nn.BatchNorm1d(joints * 2) if "input_bn" in hacks else None

        def forward_normalized(self, coords):
            if "center" in hacks:
                present = (coords != 0).any(-1, keepdim=True)
                coords = torch.where(present, coords - 0.5, torch.zeros_like(coords))
            if self.input_norm is not None:
                coords = self.input_norm(coords.flatten(1)).view_as(coords)
            return forward(self, coords)
        gcn_module.PartGCN.__init__, gcn_module.PartGCN.forward = init_with_norm, forward_normalized
    if "head_bn" in hacks:
        def head(self, size):
            nn.Sequential.__init__(self, nn.Linear(size.width, size.head_hidden), nn.BatchNorm1d(size.head_hidden),
                                   nn.ReLU(inplace=True), nn.Linear(size.head_hidden, size.head_dim))
        pretrain_module.Projector.__init__ = head


def main(name: str, overrides: str = typer.Argument("{}"), params: Path = Path("params.yaml"),
         dataset: Path = Path("data/preprocess/ksl13/dataset.h5"), out: Path = Path("bench/out/diagnosis")) -> None:
    torch.set_num_threads(1)
    changes = json.loads(overrides)
    epochs = changes.pop("epochs", 12)
    _apply_hacks(changes.pop("hacks", []))
    raw = yaml.safe_load(params.read_text())
    for section, values in changes.items():
        raw[section].update(values)
    raw["pretrain"].update(epochs=epochs, device="cpu", num_workers=0)
    settings = parse_params(raw, params)
    s = settings.pretrain
    torch.manual_seed(s.seed)
    train = PoseDataset(dataset, settings.augment, "pretrain", split="train", seed=s.seed)
    loader = DataLoader(train, batch_size=s.batch_size, shuffle=True)
    model = pretrain_module.Pretrainer(settings.model.chosen, s)
    optimizer, scheduler = sgd_with_steps(model.parameters(), s.lr, s.sgd_momentum, s.weight_decay, s.lr_steps, s.lr_gamma)
    val_views = PoseDataset(dataset, settings.augment, "pretrain", split="val", seed=123)

    @torch.no_grad()
    def view_statistics(train_mode: bool) -> dict[str, float]:
        model.train(train_mode)
        embeddings = defaultdict(list)
        for batch in DataLoader(val_views, batch_size=64):
            for which, view in zip("ab", batch["views"]):
                for m in model.modalities:
                    for part, value in model.query[m](view[m], mask_of(view, m)).items():
                        embeddings[m, part, which].append(value)
        model.train()
        result = {}
        for m, part, _ in [k for k in embeddings if k[2] == "a"]:
            a, b = torch.cat(embeddings[m, part, "a"]), torch.cat(embeddings[m, part, "b"])
            n = len(a)
            result[f"align_{m}_{part}"] = (a - b).pow(2).sum(1).mean().item()
            result[f"unif_{m}_{part}"] = torch.pdist(torch.cat([a, b])).pow(2).mul(-2).exp().mean().log().item()
            result[f"possim_{m}_{part}"] = (a * b).sum(1).mean().item()
            result[f"negsim_{m}_{part}"] = ((a @ b.T).sum() - (a * b).sum()).item() / (n * (n - 1))
        return result

    if s.bank_init == "keys":
        for step, batch in enumerate(loader):
            if step == math.ceil(max(q.size for q in model.queues()) / s.batch_size):
                break
            model.enqueue_keys(batch["views"][1])
    log, started = [], time.time()
    bank = PoseDataset(dataset, settings.augment, "eval", split="train")
    probe = PoseDataset(dataset, settings.augment, "eval", split="val")
    for epoch in range(epochs):
        train.set_epoch(epoch)
        sums, seen = defaultdict(float), 0
        for batch in loader:
            terms, _ = model(*batch["views"])
            optimizer.zero_grad()
            terms["total"].backward()
            optimizer.step()
            seen += len(batch["label"])
            for key, value in terms.items():
                sums[key] += value.item() * len(batch["label"])
        scheduler.step()
        row = {"epoch": epoch + 1, **{k: round(v / seen, 4) for k, v in sums.items()}}
        train_x, train_y = embed(model, bank, torch.device("cpu"), 64)
        val_x, val_y = embed(model, probe, torch.device("cpu"), 64)
        row["val_knn"] = round(knn_accuracy(train_x, train_y, val_x, val_y, s.knn_neighbours, len(bank.glosses)), 4)
        row.update({k: round(v, 3) for k, v in view_statistics(False).items()})
        row.update({f"T{k}": round(v, 3) for k, v in view_statistics(True).items() if k.startswith(("possim", "negsim"))})
        row["time"] = round(time.time() - started)
        log.append(row)
        print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(log))


if __name__ == "__main__":
    typer.run(main)
