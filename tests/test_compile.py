"""`model.compile`: the encoders are compiled in place, recompile only while warming up (batch
sizes, gradient and train/eval mode; never for masks or banks), give the eager results, and
their checkpoints load into uncompiled models.

The compiler backend is torch._dynamo's CompileCounter (trace, count, run the traced graph
eagerly): it sees every compilation inductor would make, in a fraction of the time."""

import pytest
import torch
import yaml
from torch._dynamo.testing import CompileCounter

from slrpipe.config import PretrainParams
from slrpipe.engine import compiling
from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.finetune.train import run_finetune
from slrpipe.model.classifier import load_model
from slrpipe.pretrain.model import Pretrainer
from slrpipe.pretrain.train import run_pretrain
from tests.conftest import TINY, tiny_params
from tests.test_pretrain import _view

FRAMES = 6


@pytest.fixture()
def counter(monkeypatch):
    """The backend every compile_in_place uses in this test, counting compilations; dynamo's
    caches (kept per code object, shared by every instance) are cleared before and after."""
    torch._dynamo.reset()
    backend = CompileCounter()
    monkeypatch.setattr(compiling, "BACKEND", backend)
    yield backend
    torch._dynamo.reset()


def _views(batch: int, seed: int) -> tuple[dict, dict]:
    """Two views whose masks also cut each sample's valid frames to a different length."""
    views = []
    for offset in (0, 100):
        view = _view(batch=batch, frames=FRAMES, seed=seed + offset)
        lengths = torch.randint(1, FRAMES + 1, (batch,), generator=torch.Generator().manual_seed(seed + offset))
        valid = torch.arange(FRAMES)[None, :] < lengths[:, None]
        view["mask"] = {part: mask & valid[:, :, None] for part, mask in view["mask"].items()}
        views.append(view)
    return views[0], views[1]


def _pretrainer(compiled: bool) -> Pretrainer:
    torch.manual_seed(0)
    model = Pretrainer(TINY, PretrainParams(bank_size=16, part_bank_size=8, transfer_top_k=4, neighbour_top_k=4))
    compiling.compile_in_place([b[m] for b in (model.query, model.key) for m in model.modalities], compiled)
    return model


def _compiled(params):
    return params.model_copy(update={"model": params.model.model_copy(update={"compile": True})})


def _train_step(model: Pretrainer, optimizer, batch: int, seed: int) -> dict[str, torch.Tensor]:
    terms, _ = model(*_views(batch, seed))
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return {name: value.detach() for name, value in terms.items()}


def test_no_recompilation_after_warm_up_whatever_the_masks_and_batch_sizes(counter):
    model = _pretrainer(compiled=True)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    # Warm-up: a full batch, then a short last batch (its size makes the batch dimension dynamic).
    _train_step(model, optimizer, 4, seed=1)
    _train_step(model, optimizer, 3, seed=2)
    warm = counter.frame_count
    # query (gradients) and key (no gradients) x static and dynamic batch; the two modalities share them.
    assert 0 < warm <= 4
    for step, batch in enumerate((4, 2, 5, 4, 3, 4)):
        _train_step(model, optimizer, batch, seed=10 + step)  # new masks, new lengths, banks filling and wrapping
    assert counter.frame_count == warm, f"{counter.frame_count - warm} recompilations after warm-up"


def test_compiled_encoders_give_the_eager_results(counter):
    results = []
    for compiled in (False, True):
        model = _pretrainer(compiled)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        results.append([_train_step(model, optimizer, batch, seed) for seed, batch in enumerate((4, 3, 4))])
    assert counter.frame_count > 0  # the second model did run compiled
    for eager, compiled in zip(*results):
        for name in eager:
            torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-6)


def test_compiled_runs_save_the_plain_modules_state(ksl_dataset, tmp_path, counter):
    root, dataset = ksl_dataset
    params = _compiled(tiny_params(root, 1, knn_every=10))
    run_pretrain(params, dataset, tmp_path / "pretrain", None, resume=False)
    assert counter.frame_count > 0  # the training steps ran compiled
    state = load_checkpoint(tmp_path / "pretrain" / "checkpoint.pt")["model"]
    assert not [key for key in state if "_orig_mod" in key]
    plain = Pretrainer(params.model.chosen, params.pretrain)
    plain.load_state_dict(state)  # strict: every key matches an uncompiled model's

    compiled_before = counter.frame_count
    schedules = {name: {"epochs": 1, "lr_steps": []} for name in ("finetune", "linear", "semi", "scratch")}
    params = _compiled(tiny_params(root, 1, finetune={"schedules": schedules}))
    run_finetune(params, dataset, tmp_path / "pretrain" / "checkpoint.pt", tmp_path / "finetune", None, resume=False)
    assert counter.frame_count > compiled_before
    for name in ("best.pt", "last.pt"):
        assert not [key for key in load_checkpoint(tmp_path / "finetune" / name)["model"] if "_orig_mod" in key], name
    model, _ = load_model(tmp_path / "finetune" / "best.pt")  # strict load into the uncompiled classifier
    assert not hasattr(model.encoders["joint"], "_compiled_call_impl") or model.encoders["joint"]._compiled_call_impl is None


def test_compile_is_off_by_default_and_typed():
    from slrpipe.config import ModelParams
    from slrpipe.errors import ParamsError
    from slrpipe.config import load_params, parse_params
    from tests.conftest import REPO

    assert ModelParams().compile is False
    assert load_params(REPO / "params.yaml").model.compile is False
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["model"]["compile"] = "yes please"
    with pytest.raises(ParamsError, match="model.compile"):
        parse_params(data, REPO / "params.yaml")
