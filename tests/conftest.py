from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from slrpipe.config import ModelSize

REPO = Path(__file__).resolve().parents[1]

# One thread: the tiny test models gain nothing from more, and OpenMP threads that spin
# while another process holds the other core slow a test run down many times over.
torch.set_num_threads(1)
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config, items):
    """The long `dvc repro` module (marked xdist_group) first, so that with several test workers
    (pyproject's -n auto) one starts it at once and the others take the short tests beside it."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable: otherwise in order


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"the shared fixtures are not at {SHARED}")
    return SHARED / "data"


@pytest.fixture()
def ksl_small(shared: Path, tmp_path: Path) -> Path:
    """Two words x two sessions x two sequences of the real ksl13 recordings."""
    root = tmp_path / "ksl"
    for session in ("MP_Data", "MP_Data1"):
        for word in ("bad", "good"):
            for sequence in ("0", "1"):
                shutil.copytree(shared / "ksl13" / session / word / sequence, root / session / word / sequence)
    return root


def one_dataset(dataset: dict, name: str = "ksl", **sections: dict) -> dict:
    """A params mapping with the one dataset `name`, the pretraining corpus and the only target."""
    pretrain, finetune = sections.pop("pretrain", {}), sections.pop("finetune", {})
    return {"datasets": {name: dataset}, "pretrain": {"corpus": [name], **pretrain},
            "finetune": {"targets": [name], **finetune}, **sections}


def layout(data: dict, name: str = "ksl") -> dict:
    """`{"dataset": {...}, ...}` (a test's one dataset) in the params layout: see one_dataset."""
    data = dict(data)
    return one_dataset(data.pop("dataset"), name, **data)


def make_params(root: Path, source: str = "mp_data", **extract: object):
    from slrpipe.config import parse_params

    return parse_params(one_dataset({"source": source, "root": str(root)}, extract=extract), REPO / "params.yaml")


# A model small enough for CPU tests of the training stages (the `small` size is ~2 M parameters).
TINY = ModelSize(joint_channels=(8, 8, 16), part_channels=(16, 16), temporal_blocks=1, temporal_kernel=3,
                 hand_layers=1, hand_heads=2, hand_ff=32, trunk_layers=1, trunk_heads=2, trunk_ff=32,
                 dropout=0.0, head_hidden=16, head_dim=8)


def tiny_params(root: Path, epochs: int, finetune: dict | None = None, **pretrain: object):
    """Params for fast training tests on `ksl_dataset`: tiny model, 16 frames, small banks, CPU."""
    from slrpipe.config import parse_params

    data = one_dataset({"source": "mp_data", "root": str(root)}, **{
        "preprocess": {"split": "signer", "val_fraction": 0.2, "test_fraction": 0.2},
        "augment": {"frames": 16, "pretrain": {"crop_min_frames": 8}, "finetune": {"crop_min_frames": 8}},
        "model": {"size": "tiny", "sizes": {"tiny": TINY.model_dump()}},
        "pretrain": {"epochs": epochs, "batch_size": 16, "bank_size": 16, "transfer_top_k": 8, "num_workers": 0,
                     "threads": 1, "knn_every": 1, "lr_steps": [2] if epochs > 2 else [], "device": "cpu", **pretrain},
        "finetune": {"batch_size": 16, "num_workers": 0, "threads": 1, "device": "cpu", **(finetune or {})},
        "evaluate": {"device": "cpu"},
    })
    return parse_params(data, REPO / "params.yaml")


def build_ksl_dataset(shared: Path, tmp: Path, words: tuple[str, ...], sequences: int) -> tuple[Path, Path]:
    """Real KSL signs x 5 sessions x `sequences` sequences, extracted and preprocessed (signer
    split) under `tmp`: (dataset root, dataset.h5)."""
    from slrpipe.pose.extract import run_extract
    from slrpipe.data.preprocess import run_preprocess

    root = tmp / "ksl"
    for session in ("MP_Data", "MP_Data1", "MP_Data2", "MP_Data3", "MP_Data4"):
        for word in words:
            for sequence in range(sequences):
                shutil.copytree(shared / "ksl13" / session / word / str(sequence), root / session / word / str(sequence))
    params = tiny_params(root, 1)
    run_extract(params, tmp / "extract", None)
    run_preprocess(params, tmp / "extract" / "keypoints.h5", tmp / "pre")
    return root, tmp / "pre" / "dataset.h5"


@pytest.fixture(scope="session")
def ksl_dataset(shared, tmp_path_factory):
    """Four real KSL signs x 5 sessions x 10 sequences."""
    return build_ksl_dataset(shared, tmp_path_factory.mktemp("ksl4"), ("bad", "glad", "no", "yes"), 10)


@pytest.fixture(scope="session")
def ksl_no_val(ksl_dataset, tmp_path_factory):
    """`ksl_dataset` cut down to 32 training samples (spread over its order, so every class
    keeps some) and no validation split: every other sample is in test."""
    import h5py
    import numpy as np

    root, dataset = ksl_dataset
    path = tmp_path_factory.mktemp("ksl-no-val") / "dataset.h5"
    shutil.copyfile(dataset, path)
    with h5py.File(path, "r+") as handle:
        column = handle["samples/split"]
        splits = np.array([value.decode() for value in column[:]], dtype=object)
        train = np.flatnonzero(splits == "train")
        kept = train[np.linspace(0, len(train) - 1, 32).round().astype(int)]
        splits[:] = "test"
        splits[kept] = "train"
        column[...] = splits
    return root, path
