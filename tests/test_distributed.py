"""DDP on CPU with the gloo backend and two processes, as torchrun would start them."""

import os
import socket

import torch
import torch.multiprocessing as mp

from slrpipe.checkpoints import load_checkpoint
from tests.conftest import tiny_params

BANK = 64  # larger than the global batch (2 x 16), so the pointer shows how many keys went in


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world: int, port: int, root, dataset, out, gather: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from slrpipe.pretrain.train import run_pretrain

    run_pretrain(tiny_params(root, 1, knn_every=10, gather_keys=gather, bank_size=BANK), dataset, out, None, resume=False)


def _run(ksl_dataset, out, gather):
    root, dataset = ksl_dataset
    mp.spawn(_worker, args=(2, _free_port(), root, dataset, out, gather), nprocs=2, join=True)
    return load_checkpoint(out / "checkpoint.pt")


def test_two_ranks_finish_and_banks_see_the_global_batch(ksl_dataset, tmp_path):
    from slrpipe.data import PoseDataset

    root, dataset = ksl_dataset
    params = tiny_params(root, 1, bank_size=BANK)
    train = len(PoseDataset(dataset, params.augment, "pretrain", split="train"))
    per_rank = -(-train // 2)  # DistributedSampler pads to equal shares
    bank = BANK

    gathered = _run(ksl_dataset, tmp_path / "gathered", gather=True)
    assert gathered["epoch"] == 1
    # Every rank enqueued the keys of both ranks.
    assert int(gathered["model"]["banks.joint_hand.pointer"]) == (2 * per_rank) % bank

    local = _run(ksl_dataset, tmp_path / "local", gather=False)
    assert int(local["model"]["banks.joint_hand.pointer"]) == per_rank % bank  # the authors' per-GPU banks

    from slrpipe.pretrain.model import Pretrainer

    model = Pretrainer(params.model.chosen, params.pretrain)
    model.load_state_dict(gathered["model"])  # rank 0's checkpoint loads into a fresh model
