from pathlib import Path

import math

import pytest
import yaml

from slrpipe.config import load_params, parse_params
from slrpipe.errors import ParamsError
from tests.conftest import REPO, layout


def test_project_params_load_and_resolve_paths():
    params = load_params(REPO / "params.yaml")
    assert params.dataset("ksl13").source == "mp_data"
    assert params.dataset("ksl13").root == REPO / "data" / "demo"
    assert params.extract.batch_size > 0


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, layout({"dataset": {"source": "mp_data", "root": "x"}, "extract": {"batch_sise": 4}}))
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == f"{path}: extract.batch_sise: unknown key"


def test_bad_value_is_named(tmp_path):
    path = _write(tmp_path, layout({"dataset": {"source": "mp_data", "root": "x"}, "extract": {"batch_size": 0}}))
    with pytest.raises(ParamsError, match=r"extract\.batch_size: Input should be greater than 0"):
        load_params(path)


def test_bad_source_and_frame_size_are_named(tmp_path):
    with pytest.raises(ParamsError, match=r"datasets\.ksl\.source: Input should be 'wlasl'"):
        parse_params(layout({"dataset": {"source": "youtube", "root": "x"}}))
    with pytest.raises(ParamsError, match=r"datasets\.ksl\.frame_size: Value error, width and height must be positive"):
        parse_params(layout({"dataset": {"source": "mp_data", "root": "x", "frame_size": [0, 480]}}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    path = tmp_path / "params.yaml"
    path.write_text("datasets: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    path.write_text("- just a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(path)


def test_relative_checkpoint_resolved_against_params_folder(tmp_path):
    path = _write(tmp_path, layout({"dataset": {"source": "mp_data", "root": "d"}, "extract": {"pose_checkpoint": "ckpt/w.pth"}}))
    params = load_params(path)
    assert params.extract.pose_checkpoint == tmp_path / "ckpt" / "w.pth"
    assert params.dataset().root == tmp_path / "d"


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
    path.write_text("datasets: {d: {source: mp_data, root: x}}\n" + text + "\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == f"{path}: {expected}"


def test_an_int_is_a_valid_float_and_lists_are_tuples(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("datasets: {d: {source: mp_data, root: x, fps: 25, frame_size: [320, 240]}}\nfinetune: {targets: [d]}\n"
                    "pretrain: {corpus: [d], lr: 1, epochs: 3, lr_steps: [1, 2]}\nevaluate: {topk: [1, 2]}\n")
    params = load_params(path)
    assert params.pretrain.lr == 1.0 and isinstance(params.pretrain.lr, float) and params.dataset().fps == 25.0
    assert params.dataset().frame_size == (320, 240) and params.pretrain.lr_steps == (1, 2) and params.evaluate.topk == (1, 2)


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
    path.write_text("datasets: {d: {source: mp_data, root: x}}\n" + text + "\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == (f"{path}: {key}.lr_steps: step {step} is not within 1..{epochs - 1} ({key}.epochs is {epochs}): "
                                "the lr drops after that many epochs, so a step must come before the last")


def test_contrast_chance_is_ln_bank_plus_one_per_contrasted_embedding():
    from slrpipe.config import PretrainParams

    assert PretrainParams(bank_size=64, transfer_top_k=32).contrast_chance == pytest.approx(2 * math.log(65))
    assert PretrainParams(bank_size=64, transfer_top_k=32, parts="hand").contrast_chance == pytest.approx(math.log(65))
    global_form = PretrainParams(bank_size=64, part_bank_size=32, transfer_anchors="global", transfer_top_k=16)
    assert global_form.contrast_chance == pytest.approx(2 * math.log(33) + math.log(65))


def test_augmentation_is_set_per_stage_and_checked_by_name():
    data = {"datasets": {"x": {"source": "mp_data", "root": "x"}}, "pretrain": {"corpus": ["x"]},
            "finetune": {"targets": ["x"]}, "augment": {"pretrain": {"spatial": "corrupt_or_shear"}, "finetune": {"crop_min_frames": 64}}}
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


def _corpus_params(tmp_path: Path, corpus=("ksl", "rec"), targets=("ksl",), **pretrain) -> Path:
    return _write(tmp_path, {"datasets": {"ksl": {"source": "mp_data", "root": "k"},
                                          "rec": {"source": "video_folder", "root": "r", "labelled": False}},
                             "pretrain": {"corpus": list(corpus), **pretrain}, "finetune": {"targets": list(targets)}})


def test_several_datasets_with_a_corpus_and_targets(tmp_path):
    params = load_params(_corpus_params(tmp_path, corpus_fraction=0.25))
    assert list(params.datasets) == ["ksl", "rec"] and params.pretrain.corpus == ("ksl", "rec")
    assert params.finetune.targets == ("ksl",) and params.pretrain.corpus_fraction == 0.25
    assert params.dataset("rec").root == tmp_path / "r" and not params.dataset("rec").labelled
    assert params.dataset("ksl").pretrain_splits == ("train",)
    with pytest.raises(ParamsError, match="say which one"):
        params.dataset()


@pytest.mark.parametrize(("corpus", "targets", "expected"), [
    (("ksl", "msasl"), ("ksl",), "pretrain.corpus: 'msasl' is not under datasets: (has ksl, rec)"),
    (("ksl",), ("wlasl",), "finetune.targets: 'wlasl' is not under datasets: (has ksl, rec)"),
    (("ksl",), ("rec",), "finetune.targets: 'rec' has datasets.rec.labelled: false"),
    ((), ("ksl",), "pretrain.corpus: name at least one of the datasets (ksl, rec)"),
    (("ksl",), (), "finetune.targets: name at least one of the datasets (ksl, rec)"),
    (("ksl", "ksl"), ("ksl",), "pretrain.corpus: a dataset is named twice"),
])
def test_corpus_and_targets_must_name_fitting_datasets(tmp_path, corpus, targets, expected):
    path = _corpus_params(tmp_path, corpus, targets)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: {expected}")


def test_corpus_fraction_and_pretrain_splits_are_checked(tmp_path):
    with pytest.raises(ParamsError, match=r"pretrain\.corpus_fraction: Input should be less than or equal to 1"):
        load_params(_corpus_params(tmp_path, corpus_fraction=1.5))
    data = yaml.safe_load(_corpus_params(tmp_path).read_text())
    data["datasets"]["ksl"]["pretrain_splits"] = ["val"]
    with pytest.raises(ParamsError, match=r"datasets\.ksl\.pretrain_splits: Value error, must include train"):
        load_params(_write(tmp_path, data))
    data["datasets"]["ksl"]["pretrain_splits"] = ["train", "test"]
    with pytest.raises(ParamsError, match=r"datasets\.ksl\.pretrain_splits\.1: Input should be 'train' or 'val'"):
        load_params(_write(tmp_path, data))


def test_the_old_single_dataset_layout_says_how_to_convert(tmp_path):
    path = _write(tmp_path, {"dataset": {"source": "mp_data", "root": "x"}})
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert message.startswith(f"{path}: dataset: the single `dataset:` section is now `datasets:`")
    assert "`corpus: [mydata]` under pretrain" in message and "`targets: [mydata]` under finetune" in message


def test_fusion_scores_are_per_target(tmp_path):
    """One file fits a single target; with several, a mapping says which target each file scores."""
    data = yaml.safe_load(_corpus_params(tmp_path).read_text())
    data["datasets"]["two"] = {"source": "mp_data", "root": "t"}
    data["evaluate"] = {"fusion_scores": "rgb.csv"}
    single = load_params(_write(tmp_path, data))
    assert single.evaluate.fusion_file("ksl") == tmp_path / "rgb.csv"  # resolved beside params.yaml
    data["finetune"]["targets"] = ["ksl", "two"]
    path = _write(tmp_path, data)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == (f"{path}: evaluate.fusion_scores: one file for 2 targets (ksl, two): name the target "
                                "each file scores, e.g. {ksl: rgb.csv}")
    data["evaluate"] = {"fusion_scores": {"two": "scores/two.csv"}}
    several = load_params(_write(tmp_path, data))
    assert several.evaluate.fusion_file("two") == tmp_path / "scores" / "two.csv"
    assert several.evaluate.fusion_file("ksl") is None  # a target left out is not fused
    data["evaluate"] = {"fusion_scores": {"rec": "r.csv"}}
    with pytest.raises(ParamsError, match=r"evaluate\.fusion_scores: 'rec' is not one of finetune\.targets \(ksl, two\)"):
        load_params(_write(tmp_path, data))


def test_reference_scores_are_per_target(tmp_path):
    """report.reference_scores follows fusion_scores: one file for a single target, else {target: file}."""
    data = yaml.safe_load(_corpus_params(tmp_path).read_text())
    data["report"] = {"reference_scores": "scratch.csv"}
    assert load_params(_write(tmp_path, data)).report.reference_file("ksl") == tmp_path / "scratch.csv"
    data["datasets"]["two"] = {"source": "mp_data", "root": "t"}
    data["finetune"]["targets"] = ["ksl", "two"]
    with pytest.raises(ParamsError, match=r"report\.reference_scores: one file for 2 targets \(ksl, two\)"):
        load_params(_write(tmp_path, data))
    data["report"] = {"reference_scores": {"two": "s/two.csv"}}
    several = load_params(_write(tmp_path, data))
    assert several.report.reference_file("two") == tmp_path / "s" / "two.csv" and several.report.reference_file("ksl") is None


def test_top_k_larger_than_its_bank_is_a_params_error():
    from slrpipe.config import PretrainParams

    with pytest.raises(ValueError, match=r"transfer_top_k \(64\) is more than bank_size \(32\)"):
        PretrainParams(bank_size=32, transfer_top_k=64)
    PretrainParams(bank_size=32, transfer_top_k=64, use_knowledge_transfer=False)  # unused: no error
    with pytest.raises(ValueError, match=r"neighbour_top_k \(1024\) is more than part_bank_size \(32\)"):
        PretrainParams(bank_size=64, part_bank_size=32, transfer_top_k=32, transfer_anchors="global",
                       consistency_form="neighbour", neighbour_top_k=1024)
    with pytest.raises(ValueError, match=r"neighbour_top_k \(100\) is more than bank_size \(64\)"):
        PretrainParams(bank_size=64, transfer_top_k=32, consistency_form="neighbour", neighbour_top_k=100)
    PretrainParams(bank_size=64, transfer_top_k=32, neighbour_top_k=100)  # the paper's softmax form reads no top-k

