"""No host-device synchronisation in a training step: nothing reads a tensor's value back to
Python (.item(), int(), float(), bool(), .tolist()) per step, and no selection has a size that
depends on the data (a boolean mask, nonzero). On a GPU each such read makes the CPU
wait for every queued kernel; the loop reads its metric sums once an epoch instead."""

import contextlib

import pytest
import torch
from torch import nn

from slrpipe.config import PretrainParams
from slrpipe.engine.checkpoints import Checkpointer
from slrpipe.engine.loop import fit, sgd_with_steps, train_loader
from slrpipe.engine.runtime import Runtime
from slrpipe.pretrain.model import Pretrainer
from tests.conftest import TINY
from tests.test_pretrain import _view

READS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__")


@contextlib.contextmanager
def counting_reads(monkeypatch, forbid: bool = False):
    """Count (or forbid) every read of a tensor's value into Python while the block runs."""
    reads: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _name=name, _original=original, **kwargs):
            if forbid:
                raise AssertionError(f"a tensor was read back with {_name} during a training step")
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    if forbid:
        # Data-dependent shapes wait for the GPU as well: a boolean-mask selection must count its hits.
        getitem = torch.Tensor.__getitem__

        def select(self, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts):
                raise AssertionError("a boolean mask selected elements during a training step (its size needs a sync)")
            return getitem(self, index)

        monkeypatch.setattr(torch.Tensor, "__getitem__", select)
        for name in ("nonzero", "masked_select"):
            monkeypatch.setattr(torch, name, lambda *args, _name=name, **kwargs: (_ for _ in ()).throw(
                AssertionError(f"torch.{_name} during a training step (its size needs a sync)")))
    try:
        yield reads
    finally:
        monkeypatch.undo()


def test_a_pretraining_step_reads_nothing_back(monkeypatch):
    torch.manual_seed(0)
    model = Pretrainer(TINY, PretrainParams(bank_size=16, part_bank_size=8, transfer_top_k=4, neighbour_top_k=4))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    pointer_before = model.banks["joint"]["hand"].pointer.clone()
    with counting_reads(monkeypatch, forbid=True):
        for seed in range(3):  # banks of 16, batches of 7: the third enqueue wraps around
            terms, diagnostics = model(_view(batch=7, seed=seed), _view(batch=7, seed=seed + 50))
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
    assert int(model.banks["joint"]["hand"].pointer) == (int(pointer_before) + 21) % 16


class _Scripted(torch.utils.data.Dataset):
    """Samples whose logged values are known: loss = x, top1 = 1 - x."""

    def __init__(self, count: int) -> None:
        self.values = torch.linspace(0.1, 0.9, count)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, key):
        _, position = key
        return {"x": self.values[position], "label": position}


def _fit(tmp_path, samples: int, monkeypatch) -> tuple[dict[str, float], list[str]]:
    model = nn.Linear(1, 1)
    dataset = _Scripted(samples)
    runtime = Runtime(torch.device("cpu"))
    loader = train_loader(dataset, 4, 0, 0, runtime)
    optimizer, scheduler = sgd_with_steps(model.parameters(), 0.1, 0.0, 0.0, [], 0.1)

    def step(batch):
        x = batch["x"].float()
        loss = model(x[:, None]).sum() * 0 + x.mean()
        return loss, {"train/loss": x.mean(), "train/top1": (1 - x).mean()}

    with counting_reads(monkeypatch) as reads:
        _, metrics = fit(model, step, loader, optimizer, scheduler, Checkpointer(tmp_path / f"{samples}.pt", "f"), runtime,
                         epochs=1, first_epoch=0, bf16=False, desc="test")
    return metrics, reads


def test_the_loop_reads_its_metrics_once_an_epoch_whatever_the_number_of_steps(tmp_path, monkeypatch):
    few_metrics, few_reads = _fit(tmp_path, 8, monkeypatch)  # 2 steps
    many_metrics, many_reads = _fit(tmp_path, 30, monkeypatch)  # 8 steps, the last one short
    assert few_reads == many_reads
    # The logged values are per-sample means, a short last batch weighted by its size.
    values = torch.linspace(0.1, 0.9, 30)
    assert many_metrics["train/loss"] == pytest.approx(values.mean().item(), rel=1e-6)
    assert many_metrics["train/top1"] == pytest.approx((1 - values).mean().item(), rel=1e-6)
