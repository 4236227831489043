"""The CUDA paths, on a GPU: pretraining and fine-tuning in bf16 (pinned memory, loader workers),
evaluate and predict, CPU vs CUDA results, and NCCL under torchrun. Skipped without CUDA;
`bash bench/gpu_check.sh` runs them (`pytest -m cuda`).

They use the demo recordings inside the repository (data/demo), not the shared fixtures, so a
fresh copy of the repository on a GPU machine runs them all."""

import numpy as np
import pytest
import torch

from slrpipe.config import PretrainParams, parse_params
from slrpipe.engine import runtime
from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.pretrain.model import Pretrainer, gather
from tests.conftest import REPO, TINY
from tests.test_pretrain import _view

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEMO = REPO / "data" / "demo"


def _params(epochs: int = 1, **finetune):
    schedules = {name: {"epochs": epochs, "lr_steps": []} for name in ("finetune", "linear", "semi", "scratch")}
    return parse_params({
        "dataset": {"source": "mp_data", "root": str(DEMO)},
        "augment": {"frames": 16, "crop_min_frames": 8},
        "model": {"size": "tiny", "sizes": {"tiny": TINY.model_dump()}},
        # Two loader workers and the GPU: pinned memory and non-blocking copies, as a real run.
        "pretrain": {"epochs": epochs, "batch_size": 16, "bank_size": 32, "transfer_top_k": 8, "num_workers": 2,
                     "threads": 2, "knn_every": 1, "lr_steps": [], "device": "cuda", "bf16": True},
        "finetune": {"batch_size": 16, "num_workers": 2, "threads": 2, "device": "cuda", "bf16": True,
                     "schedules": schedules, **finetune},
        "evaluate": {"device": "cuda", "bootstrap_draws": 10},
    }, REPO / "params.yaml")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo recordings extracted and preprocessed, pretrained for one epoch on the GPU:
    (folder, dataset.h5, pretrain checkpoint)."""
    from slrpipe.data.preprocess import run_preprocess
    from slrpipe.pose.extract import run_extract
    from slrpipe.pretrain.train import run_pretrain

    out = tmp_path_factory.mktemp("demo-cuda")
    params = _params()
    run_extract(params, out / "extract", None)
    run_preprocess(params, out / "extract" / "keypoints.h5", out / "pre")
    run_pretrain(params, out / "pre" / "dataset.h5", out / "pretrain", out / "live", resume=False)
    return out, out / "pre" / "dataset.h5", out / "pretrain" / "checkpoint.pt"


def _cuda_view(batch: int, seed: int) -> dict:
    return _to(_view(batch=batch, frames=16, seed=seed), torch.device("cuda"))


def _to(tree, device):
    return {k: _to(v, device) for k, v in tree.items()} if isinstance(tree, dict) else tree.to(device)


def test_pretraining_on_cuda_in_bf16(demo):
    _, _, checkpoint = demo
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())


def test_a_bf16_pretraining_step_never_waits_for_the_gpu():
    """No host-device synchronisation inside the step (CUDA's own detector, not a count of .item())."""
    torch.manual_seed(0)
    model = Pretrainer(TINY, PretrainParams(bank_size=64, transfer_top_k=16)).cuda()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    views = [(_cuda_view(16, seed), _cuda_view(16, seed + 50)) for seed in range(3)]

    def step(view_q, view_k):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            terms, _ = model(view_q, view_k)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        return terms

    step(*views[0])  # warm-up: the first call may set up kernels and the optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for view_q, view_k in views[1:]:
            terms = step(view_q, view_k)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(value) for value in terms.values())


def test_finetune_evaluate_and_predict_on_cuda_agree_with_the_cpu(demo):
    from slrpipe.evaluation.evaluate import run_evaluate
    from slrpipe.evaluation.metrics import read_scores_csv
    from slrpipe.evaluation.predict import Predictor, find_inputs
    from slrpipe.finetune.train import run_finetune

    out, dataset, checkpoint = demo
    params = _params()
    result = run_finetune(params, dataset, checkpoint, out / "finetune", None, resume=False)
    assert result.epochs_run == 1 and np.isfinite(result.last_metrics["train/loss"])
    best = out / "finetune" / "best.pt"

    scores = {}
    for device in ("cuda", "cpu"):
        settings = params.evaluate.model_copy(update={"device": device})
        run_evaluate(params.model_copy(update={"evaluate": settings}), best, dataset, out / f"eval-{device}")
        glosses = load_checkpoint(best)["glosses"]
        scores[device] = read_scores_csv(out / f"eval-{device}" / "scores.csv", glosses)
    assert scores["cuda"][0] == scores["cpu"][0]  # the same samples, in the same order
    np.testing.assert_allclose(scores["cuda"][1], scores["cpu"][1], atol=2e-3)  # TF32 convolutions on the GPU

    inputs = find_inputs([DEMO / "MP_Data" / "bad" / "0", DEMO / "MP_Data1" / "bad" / "1"])
    predicted = {}
    for device in ("cuda", "cpu"):
        predictor = Predictor(best, device=device)
        assert next(predictor.model.parameters()).device.type == device
        predicted[device] = [p.predictions for p in predictor.predict(inputs, top_k=3, progress=False)]
    for on_gpu, on_cpu in zip(predicted["cuda"], predicted["cpu"]):
        assert [gloss for gloss, _ in on_gpu] == [gloss for gloss, _ in on_cpu]
        np.testing.assert_allclose([p for _, p in on_gpu], [p for _, p in on_cpu], atol=2e-3)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_one_forward_pass_on_cpu_and_cuda_agree(size):
    from slrpipe.config import load_params

    model_size = TINY if size == "tiny" else load_params(REPO / "params.yaml").model.sizes["small"]
    torch.manual_seed(0)
    model = Pretrainer(model_size, PretrainParams(bank_size=64, transfer_top_k=16)).eval()
    view = _view(batch=8, frames=32, seed=3)
    with torch.no_grad():
        on_cpu = model.features(view)
        model.cuda()
        on_gpu = model.features(_to(view, torch.device("cuda"))).float().cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            in_bf16 = model.features(_to(view, torch.device("cuda"))).float().cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=2e-3, rtol=2e-3)  # fp32 (TF32 convolutions)
    # bf16 keeps 8 bits of mantissa: the normalized features agree to about 1e-2, per sample in direction.
    assert torch.nn.functional.cosine_similarity(in_bf16, on_cpu, dim=1).min() > 0.99


def test_torchrun_on_one_gpu_joins_nccl_and_gathers(monkeypatch):
    from tests.test_distributed import _free_port

    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "LOCAL_RANK": "0",
                        "WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "test"}.items():
        monkeypatch.setenv(name, value)
    started = runtime.start("cuda")
    try:
        assert runtime.dist.get_backend() == "nccl" and started.device.type == "cuda"
        wrapped = runtime.distribute(torch.nn.Linear(4, 2).to(started.device), started)
        wrapped(torch.ones(3, 4, device=started.device)).sum().backward()  # an all-reduce of the gradients
        keys = torch.randn(5, 8, device=started.device)
        assert torch.equal(gather(keys), keys)
    finally:
        runtime.stop(started)
