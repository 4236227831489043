"""Torch threads of the training processes (`threads: auto | <int>`)."""

import pytest
import torch

from slrpipe.engine import runtime
from slrpipe.config import parse_params
from slrpipe.errors import ParamsError
from tests.conftest import REPO, layout


@pytest.mark.parametrize(("setting", "workers", "cores", "environ", "expected"), [
    ("auto", 2, 8, {}, 6),
    ("auto", 2, 2, {}, 1),  # never below one
    ("auto", 0, 2, {}, 2),
    ("auto", 2, 16, {"LOCAL_WORLD_SIZE": "4"}, 2),  # torchrun: each process gets its share of the cores
    ("auto", 2, 16, {"OMP_NUM_THREADS": "3"}, 3),  # the user's (or torchrun's) explicit choice wins
    (5, 2, 2, {"OMP_NUM_THREADS": "1"}, 5),  # a number is taken as it is
])
def test_choose_threads(setting, workers, cores, environ, expected):
    assert runtime.choose_threads(setting, workers, cores=cores, environ=environ) == expected


def test_start_sets_threads_and_stop_restores_them(monkeypatch):
    monkeypatch.setattr(runtime, "available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    started = runtime.start("cpu", "auto", num_workers=1)
    try:
        assert torch.get_num_threads() == 3
    finally:
        runtime.stop(started)
    assert torch.get_num_threads() == before
    runtime.stop(runtime.start("cpu"))  # no setting: threads left alone
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("section", ["pretrain", "finetune"])
def test_threads_setting_is_auto_or_a_positive_integer(section):
    def parse(value):
        return parse_params(layout({"dataset": {"source": "mp_data", "root": "x"}, section: {"threads": value}}), REPO / "params.yaml")

    assert getattr(parse("auto"), section).threads == "auto"
    assert getattr(parse(3), section).threads == 3
    for bad in (0, True, "many", "2"):
        with pytest.raises(ParamsError, match=rf"{section}\.threads"):
            parse(bad)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_training_runs_with_the_chosen_threads(stage, tmp_path, monkeypatch):
    """The training loops run under their section's setting, and give the caller its threads back."""
    from slrpipe.finetune import train as finetune
    from slrpipe.pretrain import train
    from tests.conftest import tiny_params

    if stage == "pretrain":
        module, run = train, lambda params: train.run_pretrain(params, tmp_path, tmp_path, None, True)
    else:
        module, run = finetune, lambda params: finetune.run_finetune(params, tmp_path, tmp_path, tmp_path, None, True)
    seen = []
    monkeypatch.setattr(module, "_train", lambda *args, **kwargs: seen.append(torch.get_num_threads()))
    params = tiny_params(tmp_path, 1, **{"threads": 2} if stage == "pretrain" else {}, finetune={"threads": 2})
    before = torch.get_num_threads()
    run(params)
    assert seen == [2] and torch.get_num_threads() == before


def test_nccl_between_gpus_gloo_on_cpus():
    assert runtime.backend_for(torch.device("cuda", 0)) == "nccl"
    assert runtime.backend_for(torch.device("cpu")) == "gloo"


def test_a_cuda_process_under_torchrun_joins_with_nccl(monkeypatch):
    """What start does on a GPU under torchrun, with the GPU and the process group stood in for."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setattr(runtime, "resolve_device", lambda setting, local_rank=0: torch.device("cuda", local_rank))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    backends = []
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: bool(backends))
    monkeypatch.setattr(runtime.dist, "init_process_group", backends.append)
    monkeypatch.setattr(runtime.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(runtime.dist, "get_world_size", lambda: 1)
    monkeypatch.setattr(runtime.dist, "get_backend", lambda: backends[-1])
    started = runtime.start("auto")
    assert backends == ["nccl"]
    assert started.device == torch.device("cuda", 0) and started.distributed


def test_one_process_under_torchrun_is_a_process_group_of_one(monkeypatch):
    """`torchrun --nproc-per-node=1` runs the distributed path (DDP, collectives), on a CPU with gloo."""
    from tests.test_distributed import _free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    started = runtime.start("cpu")
    try:
        assert runtime.dist.is_initialized() and runtime.dist.get_backend() == "gloo"
        assert started.distributed and started.world_size == 1
        wrapped = runtime.distribute(torch.nn.Linear(2, 2), started)
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    finally:
        runtime.stop(started)
    assert not runtime.dist.is_initialized()
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    assert not runtime.start("cpu").distributed  # a plain run stays alone


# --- bfloat16 autocast where the device has it natively

@pytest.mark.parametrize(("avx512_bf16", "amx", "wanted", "expected"), [
    (True, False, True, True),
    (False, True, True, True),
    (False, False, True, False),  # emulated bfloat16 is slower than float32: stay in float32
    (True, True, False, False),  # bf16: false is always float32
])
def test_bf16_on_the_cpu_only_where_it_is_native(monkeypatch, caplog, avx512_bf16, amx, wanted, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    with caplog.at_level("INFO", logger="slrpipe.engine.runtime"):
        assert runtime.use_bf16(runtime.Runtime(torch.device("cpu")), wanted, "pretrain") is expected
    assert ("bfloat16 autocast" if expected else "float32") in caplog.text


def test_fit_runs_the_step_under_the_autocast_it_chose(monkeypatch, tmp_path):
    from slrpipe.engine.checkpoints import Checkpointer
    from slrpipe.engine.loop import fit, sgd_with_steps, train_loader

    seen = []
    model = torch.nn.Linear(2, 1)

    def step(batch):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        out = model(batch["x"])
        return out.float().sum(), {"train/loss": out.float().mean()}

    class Data(torch.utils.data.Dataset):  # the loader's sampler hands out (epoch, index) keys
        def __len__(self):
            return 4

        def __getitem__(self, key):
            return {"x": torch.ones(2), "label": key[1]}

    data = Data()
    for native in (True, False):
        monkeypatch.setattr(runtime, "native_bf16", lambda device, native=native: native)
        here = runtime.Runtime(torch.device("cpu"))
        optimizer, scheduler = sgd_with_steps(model.parameters(), 0.1, 0.0, 0.0, [], 0.1)
        fit(model, step, train_loader(data, 2, 0, 0, here), optimizer, scheduler, Checkpointer(tmp_path / f"{native}.pt", "f"),
            here, epochs=1, first_epoch=0, bf16=True, desc="test")
        assert seen == [native] * 2
        seen.clear()
