"""The whole data path on real fixtures: extract -> preprocess -> loader."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from slrpipe.config import parse_params
from slrpipe.data.dataset import PoseDataset
from slrpipe.errors import SlrpipeError
from slrpipe.pose.extract import run_extract
from slrpipe.h5io import RaggedFile
from slrpipe.data.preprocess import run_preprocess
from tests.conftest import REPO, layout


def _build(root, tmp_path, source="mp_data", frame_size=(640, 480), **preprocess):
    params = parse_params(
        layout({"dataset": {"source": source, "root": str(root), "frame_size": list(frame_size)}, "preprocess": preprocess}),
        REPO / "params.yaml",
    )
    run_extract(params, tmp_path / "extract", None)
    result = run_preprocess(params, tmp_path / "extract" / "keypoints.h5", tmp_path / "pre")
    return params, result, tmp_path / "pre" / "dataset.h5"


@pytest.fixture(scope="module")
def ksl3(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ksl")
    root = tmp / "ksl"
    for session in ("MP_Data", "MP_Data1", "MP_Data2", "MP_Data3", "MP_Data4"):
        for word in ("bad", "good", "yes"):
            for sequence in ("0", "1", "2"):
                shutil.copytree(shared / "ksl13" / session / word / sequence, root / session / word / sequence)
    return _build(root, tmp)


def test_ksl13_whole_path(ksl3):
    params, result, path = ksl3
    assert result.written + len(result.problems) == 45
    assert sum(result.split_counts.values()) == result.written
    with RaggedFile(path) as dataset:
        signers_by_split = {}
        for signer, split in zip(dataset.column("signer"), dataset.column("split")):
            signers_by_split.setdefault(split, set()).add(signer)
        assert not signers_by_split["train"] & signers_by_split["test"]
        assert not signers_by_split["train"] & signers_by_split["val"]
        coords = dataset._handle["frames/coords"][:]
        mask = dataset._handle["frames/mask"][:]
    assert np.all(coords[~mask] == 0)
    assert 0.0 <= coords[mask].min() and coords[mask].max() <= 1.5  # crops and frame-relative trunk


def test_loader_modes_shapes_and_labels(ksl3):
    params, _, path = ksl3
    pretrain = PoseDataset(path, params.augment, "pretrain", split="train")
    batch = next(iter(DataLoader(pretrain, batch_size=4)))
    view = batch["views"][0]
    assert view["joint"]["right_hand"].shape == (4, 64, 21, 2)
    assert view["motion"]["left_hand"].shape == (4, 64, 21, 2)
    assert view["mask"]["trunk"].shape == (4, 64, 7) and view["mask"]["trunk"].dtype == torch.bool
    assert not torch.equal(batch["views"][0]["joint"]["trunk"], batch["views"][1]["joint"]["trunk"])
    evaluation = PoseDataset(path, params.augment, "eval", split="test")
    first, again = evaluation[0], evaluation[0]
    assert torch.equal(first["view"]["joint"]["trunk"], again["view"]["joint"]["trunk"])
    assert first["label"].item() == evaluation.labels[evaluation.indices[0]]


def test_same_seed_and_index_give_the_same_views_in_any_worker_count(ksl3):
    params, _, path = ksl3

    def batches(workers, epoch=0):
        dataset = PoseDataset(path, params.augment, "pretrain", split="train", seed=7)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=5, num_workers=workers, shuffle=False)
        return [b["views"][1]["motion"]["right_hand"] for b in loader]

    single = batches(0)
    parallel = batches(2)
    assert all(torch.equal(a, b) for a, b in zip(single, parallel))
    assert not all(torch.equal(a, b) for a, b in zip(single, batches(0, epoch=1)))


def test_semi_supervised_subset_trains_on_exactly_the_saved_ids(ksl3, tmp_path):
    params, result, path = ksl3
    saved = json.loads((path.parent / "label_subsets.json").read_text())
    assert list(saved) == ["20%", "40%", "60%"]
    assert set(saved["20%"]) <= set(saved["40%"]) <= set(saved["60%"])
    subset = PoseDataset(path, params.augment, "train", split="train", subset="40%")
    assert sorted(subset.sample_ids) == sorted(saved["40%"])
    with pytest.raises(SlrpipeError, match="label subset '30%' not in"):
        PoseDataset(path, params.augment, "train", split="train", subset="30%")


def test_real_mmpose_output_whole_path(shared, tmp_path):
    root = tmp_path / "json"
    root.mkdir()
    shutil.copy(shared / "mmpose_wholebody" / "SOUP.json", root / "SOUP.json")
    params, result, path = _build(root, tmp_path, source="mmpose_json", frame_size=(320, 240), split="random",
                                  val_fraction=0.0, test_fraction=0.0)
    assert result.written == 1 and not result.problems
    with RaggedFile(path) as dataset, RaggedFile(tmp_path / "extract" / "keypoints.h5") as raw:
        coords, mask, boxes = dataset.frames("coords", 0), dataset.frames("mask", 0), dataset.frames("hand_boxes", 0)
        keypoints = raw.frames("keypoints", 0)
    assert len(coords) > 0.8 * len(keypoints)  # frames without any hand are rare in this clip
    # Confident hand joints land inside their crop, boxes are a plausible hand size for 320x240.
    assert np.all((coords[mask][:, 0] > -0.01) & (coords[mask][:, 0] < 1.01))
    sides = boxes[:, :, 2][boxes[:, :, 2] > 0]
    assert 10 < np.median(sides) < 120
    loader = PoseDataset(path, params.augment, "pretrain", split="train")
    assert loader[0]["views"][0]["joint"]["right_hand"].shape == (64, 21, 2)


@pytest.mark.parametrize("flip_views", ["shared", "independent"])
def test_flip_views_shared_mirrors_both_views_or_neither(ksl3, flip_views):
    params, _, path = ksl3
    # Every augmentation off but the flip: the two views of a sample differ only if one is flipped.
    settings = params.augment.model_copy(update={"pretrain": params.augment.pretrain.model_copy(update={
        "flip_views": flip_views, "flip_probability": 0.5, "affine_probability": 0.0,
        "joint_mask_probability": 0.0, "crop_min_ratio": 1.0, "crop_min_frames": 1,
    })})
    dataset = PoseDataset(path, settings, "pretrain", split="train")
    mirrored = [not torch.equal(views[0]["joint"]["right_hand"], views[1]["joint"]["right_hand"])
                for views in (dataset[i]["views"] for i in range(len(dataset)))]
    if flip_views == "shared":
        assert not any(mirrored)
    else:  # each view flips with p 0.5: about half the pairs are mirror images
        assert 0.2 < np.mean(mirrored) < 0.8


def test_each_stage_reads_its_own_augmentation(ksl3):
    """augment.pretrain feeds the two pretraining views, augment.finetune the fine-tuning view:
    here the first changes nothing and the second always swaps the hands (no crop, no spatial step)."""
    params, _, path = ksl3
    quiet = {"crop_min_ratio": 1.0, "crop_min_frames": 1, "spatial": "none", "flip": "swap_hands"}
    settings = params.augment.model_copy(update={
        "pretrain": params.augment.pretrain.model_copy(update={**quiet, "flip_probability": 0.0}),
        "finetune": params.augment.finetune.model_copy(update={**quiet, "flip_probability": 1.0}),
    })
    clean = PoseDataset(path, settings, "eval", split="train")[0]["view"]
    pretrain = PoseDataset(path, settings, "pretrain", split="train")[0]["views"]
    finetune = PoseDataset(path, settings, "train", split="train")[0]["view"]
    for branch in ("joint", "motion"):
        for view in pretrain:
            assert all(torch.equal(view[branch][part], clean[branch][part]) for part in clean[branch])
        assert torch.equal(finetune[branch]["right_hand"], clean[branch]["left_hand"])
        assert torch.equal(finetune[branch]["trunk"], clean[branch]["trunk"])
