from pathlib import Path

import math

import pytest
import yaml

from slrpipe.config import load_params, parse_params
from slrpipe.errors import ParamsError
from tests.conftest import REPO


def test_project_params_load_and_resolve_paths():
    params = load_params(REPO / "params.yaml")
    assert params.dataset.source == "mp_data"
    assert params.dataset.root == REPO / "data" / "demo"
    assert params.extract.batch_size > 0


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, {"dataset": {"source": "mp_data", "root": "x"}, "extract": {"batch_sise": 4}})
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == f"{path}: extract.batch_sise: unknown key"


def test_bad_value_is_named(tmp_path):
    path = _write(tmp_path, {"dataset": {"source": "mp_data", "root": "x"}, "extract": {"batch_size": 0}})
    with pytest.raises(ParamsError, match=r"extract\.batch_size: Input should be greater than 0"):
        load_params(path)


def test_bad_source_and_frame_size_are_named(tmp_path):
    with pytest.raises(ParamsError, match=r"dataset\.source: Input should be 'wlasl'"):
        parse_params({"dataset": {"source": "youtube", "root": "x"}})
    with pytest.raises(ParamsError, match=r"dataset\.frame_size: Value error, width and height must be positive"):
        parse_params({"dataset": {"source": "mp_data", "root": "x", "frame_size": [0, 480]}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    path = tmp_path / "params.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    path.write_text("- just a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(path)


def test_relative_checkpoint_resolved_against_params_folder(tmp_path):
    path = _write(tmp_path, {"dataset": {"source": "mp_data", "root": "d"}, "extract": {"pose_checkpoint": "ckpt/w.pth"}})
    params = load_params(path)
    assert params.extract.pose_checkpoint == tmp_path / "ckpt" / "w.pth"
    assert params.dataset.root == tmp_path / "d"


def test_gpu_asked_for_but_absent_is_one_clear_line(monkeypatch):
    import torch

    from slrpipe.errors import SlrpipeError
    from slrpipe.engine.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SlrpipeError, match="device is cuda but no GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pretrain: {epochs: true}", "pretrain.epochs: Input should be a valid integer"),  # was read as 1
        ("pretrain: {epochs: 2.0}", "pretrain.epochs: Input should be a valid integer"),
        ("pretrain: {lr: '0.5'}", "pretrain.lr: Input should be a valid number"),
        ("pretrain: {lr: false}", "pretrain.lr: Input should be a valid number"),
        ("pretrain: {bf16: 1}", "pretrain.bf16: Input should be a valid boolean"),
        ("pretrain: {lr_steps: [yes]}", "pretrain.lr_steps.0: Input should be a valid integer"),
        ("preprocess: {label_fractions: ['0.2']}", "preprocess.label_fractions.0: Input should be a valid number"),
        ("finetune: {label_fraction: true}", "finetune.label_fraction: Input should be a valid number"),
    ],
)
def test_params_are_strictly_typed(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: {source: mp_data, root: x}\n" + text + "\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == f"{path}: {expected}"


def test_an_int_is_a_valid_float_and_lists_are_tuples(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: {source: mp_data, root: x, fps: 25, frame_size: [320, 240]}\n"
                    "pretrain: {lr: 1, epochs: 3, lr_steps: [1, 2]}\nevaluate: {topk: [1, 2]}\n")
    params = load_params(path)
    assert params.pretrain.lr == 1.0 and isinstance(params.pretrain.lr, float) and params.dataset.fps == 25.0
    assert params.dataset.frame_size == (320, 240) and params.pretrain.lr_steps == (1, 2) and params.evaluate.topk == (1, 2)


@pytest.mark.parametrize(
    ("text", "key", "step", "epochs"),
    [
        ("pretrain: {epochs: 5, lr_steps: [2, 20]}", "pretrain", 20, 5),
        ("pretrain: {epochs: 5, lr_steps: [5]}", "pretrain", 5, 5),  # after the last epoch: never used
        ("pretrain: {epochs: 5, lr_steps: [0]}", "pretrain", 0, 5),
        ("finetune: {schedules: {finetune: {epochs: 60}, linear: {epochs: 30, lr_steps: [50]}, semi: {epochs: 60}, "
         "scratch: {epochs: 60}}}", "finetune.schedules.linear", 50, 30),
    ],
)
def test_lr_steps_beyond_epochs_are_named(tmp_path, text, key, step, epochs):
    path = tmp_path / "params.yaml"
    path.write_text("dataset: {source: mp_data, root: x}\n" + text + "\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == (f"{path}: {key}.lr_steps: step {step} is not within 1..{epochs - 1} ({key}.epochs is {epochs}): "
                                "the lr drops after that many epochs, so a step must come before the last")


def test_contrast_chance_is_ln_bank_plus_one_per_contrasted_embedding():
    from slrpipe.config import PretrainParams

    assert PretrainParams(bank_size=64).contrast_chance == pytest.approx(2 * math.log(65))
    assert PretrainParams(bank_size=64, parts="hand").contrast_chance == pytest.approx(math.log(65))
    global_form = PretrainParams(bank_size=64, part_bank_size=32, transfer_anchors="global", transfer_top_k=16)
    assert global_form.contrast_chance == pytest.approx(2 * math.log(33) + math.log(65))


def test_augmentation_is_set_per_stage_and_checked_by_name():
    data = {"dataset": {"source": "mp_data", "root": "x"},
            "augment": {"pretrain": {"spatial": "corrupt_or_shear"}, "finetune": {"crop_min_frames": 64}}}
    params = parse_params(data)
    assert params.augment.pretrain.spatial == "corrupt_or_shear" and params.augment.finetune.spatial == "affine_mask"
    assert params.augment.finetune.crop_min_frames == 64 and params.augment.pretrain.crop_min_frames == 32
    bad = {"augment": {"finetune": {"flip_views": "shared"}}}  # a pretraining-only key
    with pytest.raises(ParamsError, match=r"augment\.finetune\.flip_views: unknown key"):
        parse_params({**data, **bad})
    with pytest.raises(ParamsError, match=r"augment\.pretrain\.flip: Input should be 'mirror' or 'swap_hands'"):
        parse_params({**data, "augment": {"pretrain": {"flip": "both"}}})
    with pytest.raises(ParamsError, match=r"augment\.test_crop: Input should be less than or equal to 1"):
        parse_params({**data, "augment": {"test_crop": 1.5}})
    with pytest.raises(ParamsError, match=r"preprocess\.fallback_box: Input should be 'ours' or 'official'"):
        parse_params({**data, "preprocess": {"fallback_box": "theirs"}})


def test_saved_augment_settings_read_back_and_old_flat_files_still_load():
    from slrpipe.config import AugmentParams

    current = AugmentParams(test_crop=0.95, motion_source="view", finetune={"crop_min_ratio": 0.5})
    assert AugmentParams.from_saved(current.model_dump(mode="json")) == current
    # A model file from before per-stage augmentation: one flat set of stage keys, and motion
    # differenced from each view (the only form then).
    old = {"frames": 32, "motion": "forward", "crop_min_ratio": 0.2, "joint_mask_count": 5, "flip_views": "independent"}
    loaded = AugmentParams.from_saved(old)
    assert loaded.frames == 32 and loaded.motion == "forward" and loaded.motion_source == "view" and loaded.test_crop == 1.0
    assert loaded.pretrain.crop_min_ratio == loaded.finetune.crop_min_ratio == 0.2
    assert loaded.pretrain.joint_mask_count == 5 and loaded.pretrain.flip_views == "independent"
