"""`slrpipe predict` on real recordings with a tiny model trained here on real KSL data."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from slrpipe.data.dataset import PoseDataset
from slrpipe.finetune.train import run_finetune
from slrpipe.pose.manifest import KIND_MMPOSE_JSON, KIND_MP_FRAMES, KIND_MP_SEQUENCE, KIND_VIDEO
from slrpipe.pose.posefiles import load_mp_frames
from slrpipe.evaluation.predict import PredictInput, Predictor, find_inputs
from stages.common import standalone
from stages.predict import predict
from tests.conftest import tiny_params

runner = CliRunner()
app = standalone(predict)
GLOSSES = ["bad", "glad", "no", "yes"]


@pytest.fixture(scope="module")
def trained(ksl_dataset, tmp_path_factory):
    """A tiny classifier trained from scratch for one epoch: predictions need not be right, only made the right way."""
    root, dataset = ksl_dataset
    out = tmp_path_factory.mktemp("model")
    schedules = {name: {"epochs": 1, "lr_steps": []} for name in ("finetune", "linear", "semi", "scratch")}
    params = tiny_params(root, 1, finetune={"protocol": "scratch", "schedules": schedules, "augment": False})
    run_finetune(params, dataset, out / "none.pt", out, None, resume=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def pose_inputs(shared, tmp_path_factory):
    """One input per pose format: a ksl13 frame folder, the same recording as a (T, 258) .npy, an MMPose JSON."""
    folder = shared / "ksl13" / "MP_Data" / "glad" / "5"
    sequence = tmp_path_factory.mktemp("npy") / "glad5.npy"
    np.save(sequence, load_mp_frames(folder))
    return [folder, sequence, shared / "mmpose_wholebody" / "SOUP.json"]


def _invoke(model, *args):
    return runner.invoke(app, [*map(str, args), "--model", str(model), "--device", "cpu"])


def _json_rows(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_prepared_view_is_identical_to_the_training_loader(ksl_dataset, trained):
    root, dataset = ksl_dataset
    predictor = Predictor(trained, device="cpu")
    loader = PoseDataset(dataset, predictor.augment, "eval")
    positions = [0, len(loader) // 2, len(loader) - 1]
    views = []
    for position in positions:
        expected = loader[position]["view"]
        view = predictor.prepare(PredictInput(root / loader.sample_ids[position], KIND_MP_FRAMES))
        for group, parts in expected.items():
            for part, tensor in parts.items():
                assert view[group][part].dtype == tensor.dtype
                assert torch.equal(view[group][part], tensor), (loader.sample_ids[position], group, part)
        views.append(expected)

    # ... and the probabilities are those of the model on the loader's batch.
    items = [PredictInput(root / loader.sample_ids[p], KIND_MP_FRAMES) for p in positions]
    predicted = list(predictor.predict(items, top_k=4, progress=False))
    with torch.no_grad():
        stacked = {g: {p: torch.stack([v[g][p] for v in views]) for p in views[0][g]} for g in views[0]}
        scores = torch.softmax(predictor.model(stacked), dim=1).numpy()
    for prediction, row in zip(predicted, scores):
        assert [g for g, _ in prediction.predictions] == [GLOSSES[i] for i in np.argsort(-row, kind="stable")]
        np.testing.assert_allclose([p for _, p in prediction.predictions], np.sort(row)[::-1], rtol=1e-6)


def test_every_pose_format_as_json_lines(trained, pose_inputs):
    result = _invoke(trained, *pose_inputs, "--json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    rows = _json_rows(result)
    assert [row["input"] for row in rows] == [str(p) for p in pose_inputs]
    for row in rows:
        assert len(row["predictions"]) == 3 and {p["gloss"] for p in row["predictions"]} <= set(GLOSSES)
        probabilities = [p["probability"] for p in row["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    # The frame folder and the .npy written from it are the same recording.
    assert rows[0]["predictions"] == rows[1]["predictions"]


def test_same_input_gives_the_same_result_twice(trained, pose_inputs):
    first, second = (_invoke(trained, *pose_inputs, "--json") for _ in range(2))
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout


def test_batches_do_not_change_the_results(trained, pose_inputs):
    predictor = Predictor(trained, device="cpu")
    items = find_inputs([*pose_inputs, pose_inputs[0].parent / "no-such-folder", *pose_inputs])
    one_by_one = list(predictor.predict(items, batch_size=1, progress=False))
    batched = list(predictor.predict(items, batch_size=4, progress=False))
    assert [p.input for p in batched] == [str(item.path) for item in items]
    assert [p.error for p in batched] == [p.error for p in one_by_one] == [None] * 3 + ["not found"] + [None] * 3
    for a, b in zip(one_by_one, batched):
        assert [g for g, _ in a.predictions] == [g for g, _ in b.predictions]
        np.testing.assert_allclose([p for _, p in a.predictions], [p for _, p in b.predictions], atol=1e-6)


def test_table_and_csv(trained, pose_inputs):
    table = _invoke(trained, *pose_inputs)
    assert table.exit_code == 0, table.output
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["input", "top-1", "probability", "top-4"]  # top-5 capped at 4 classes
    assert len(lines) == 3
    for line, path in zip(lines, pose_inputs):
        assert line.startswith(str(path)) and line.split()[1] in GLOSSES and line.count(" | ") == 3

    result = _invoke(trained, *pose_inputs, "--csv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "input,gloss_1,probability_1,gloss_2,probability_2,error"
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [row["input"] for row in rows] == [str(p) for p in pose_inputs]
    assert all(row["gloss_1"] in GLOSSES and float(row["probability_1"]) >= float(row["probability_2"]) and not row["error"]
               for row in rows)


def test_output_file(trained, pose_inputs, tmp_path):
    out = tmp_path / "out" / "predictions.jsonl"
    result = _invoke(trained, pose_inputs[0], "--json", "--output", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["input"] == str(pose_inputs[0])


def test_bad_inputs_get_error_rows_and_exit_status_1(trained, pose_inputs, shared, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    no_hands = tmp_path / "no_hands"
    shutil.copytree(shared / "ksl13" / "MP_Data" / "bad" / "0", no_hands)
    for frame in no_hands.glob("*.npy"):
        vector = np.load(frame)
        vector[33 * 4:] = 0.0  # both hands not found; the body still is
        np.save(frame, vector)
    wrong_shape = tmp_path / "wrong.npy"
    np.save(wrong_shape, np.ones((30, 100), np.float32))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")

    bad = [garbage, no_hands, wrong_shape, notes, tmp_path / "absent.json"]
    result = _invoke(trained, pose_inputs[0], *bad, "--json")
    assert result.exit_code == 1
    rows = _json_rows(result)
    assert len(rows[0]["predictions"]) == 4
    errors = {row["input"]: row["error"] for row in rows[1:]}
    assert errors == {
        str(garbage): "cannot open video (unreadable or unsupported container)",
        str(no_hands): "no frame in which a hand is found",
        str(wrong_shape): "expected 258 or 1662 values per frame (MediaPipe pose+hands, with or without face), "
                          "got shape (30, 100)",
        str(notes): "not a video, MMPose .json, MediaPipe .npy or frame folder",
        str(tmp_path / "absent.json"): "not found",
    }
    assert "5 of 6 input(s) failed" in result.stderr

    table = _invoke(trained, garbage, pose_inputs[0])
    assert table.exit_code == 1
    line = table.stdout.splitlines()[1]
    assert line.startswith(str(garbage)) and line.endswith("  error: cannot open video (unreadable or unsupported container)")


def test_folders_expand_to_their_inputs(shared, tmp_path):
    (tmp_path / "clips" / "b").mkdir(parents=True)
    (tmp_path / "clips" / "a.mp4").symlink_to(shared / "videos" / "SOUP.mp4")
    (tmp_path / "clips" / "b" / "soup.json").symlink_to(shared / "mmpose_wholebody" / "SOUP.json")
    (tmp_path / "clips" / "README.txt").write_text("not an input")
    shutil.copytree(shared / "ksl13" / "MP_Data" / "no" / "2", tmp_path / "clips" / "b" / "2")
    shutil.copytree(shared / "ksl13" / "MP_Data" / "no" / "0", tmp_path / "clips" / "b" / "10")
    np.save(tmp_path / "clips" / "b" / "seq.npy", np.zeros((5, 258)))
    (tmp_path / "empty").mkdir()

    found = find_inputs([tmp_path / "clips", tmp_path / "clips" / "b" / "2", tmp_path / "empty"])
    clips = tmp_path / "clips"
    assert [(item.path, item.kind) for item in found[:-1]] == [
        (clips / "a.mp4", KIND_VIDEO),
        (clips / "b" / "seq.npy", KIND_MP_SEQUENCE),
        (clips / "b" / "soup.json", KIND_MMPOSE_JSON),
        (clips / "b" / "2", KIND_MP_FRAMES),  # a frame folder is one input, and 2 comes before 10
        (clips / "b" / "10", KIND_MP_FRAMES),
        (clips / "b" / "2", KIND_MP_FRAMES),  # given by itself
    ]
    assert found[-1].problem.startswith("no videos or pose files in folder")


def test_a_video_through_mediapipe(trained, shared):
    pytest.importorskip("mediapipe", reason="MediaPipe extra not installed (slrpipe install-extras mediapipe)")
    result = _invoke(trained, shared / "videos" / "SOUP.mp4", "--json")
    assert result.exit_code == 0, result.output
    (row,) = _json_rows(result)
    assert row["input"] == str(shared / "videos" / "SOUP.mp4") and len(row["predictions"]) == 4


def test_setup_problems_end_with_one_line(trained, pose_inputs, tmp_path):
    result = _invoke(tmp_path / "missing.pt", pose_inputs[0])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: model file {tmp_path / 'missing.pt'} not found: "
                                     "run the finetune stage (dvc repro finetune) or pass --model")
    both = _invoke(trained, pose_inputs[0], "--json", "--csv")
    assert both.exit_code == 2 and "choose one of --json and --csv" in both.output


def test_settings_come_from_the_model_file(trained, pose_inputs, tmp_path):
    from slrpipe.engine.checkpoints import load_checkpoint
    from slrpipe.engine.checkpoints import save_checkpoint

    state = load_checkpoint(trained)
    state["preprocess"]["crop_scale"] = 3.0
    state["augment"].update(frames=8, motion="forward")
    state["dataset"]["frame_size"] = [320, 240]
    state["preprocess"]["trunk_norm"] = "frame"  # the form in which the frame size shows in the trunk
    changed = tmp_path / "changed.pt"
    save_checkpoint(state, changed)
    folder, _, mmpose_json = pose_inputs
    default, other = Predictor(trained, device="cpu"), Predictor(changed, device="cpu")
    before, after = (p.prepare(PredictInput(folder, KIND_MP_FRAMES)) for p in (default, other))
    assert before["joint"]["right_hand"].shape[0] == 16 and after["joint"]["right_hand"].shape[0] == 8
    assert torch.all(after["motion"]["trunk"][-1] == 0)  # forward motion: the last frame has none
    first, last = before["joint"]["right_hand"][0], after["joint"]["right_hand"][0]
    assert not torch.allclose(first, last)  # a larger crop box: other hand coordinates

    # Pose files without an image size use the model's frame size, or --frame-size.
    item = PredictInput(mmpose_json, KIND_MMPOSE_JSON)
    trunk = [Predictor(changed, device="cpu", frame_size=size).prepare(item)["joint"]["trunk"] for size in (None, (640, 480))]
    assert torch.allclose(trunk[0], 2 * trunk[1])  # SOUP.json was estimated on a 320 x 240 video
    assert trunk[0].max() <= 1.0


def test_mmpose_backend_gets_the_options(trained, shared, tmp_path, monkeypatch):
    """The video goes through the mmpose branch of the Extractor with the options as its settings;
    a stand-in estimator returns the MMPose JSON made from the same video, so the video must
    predict exactly like that JSON read at the video's frame size."""
    from slrpipe.pose.backends import mmpose_backend
    from slrpipe.pose.posefiles import load_mmpose_json

    built = {}

    class Estimator:
        def __init__(self, **settings):
            built.update(settings)

        def estimate_video(self, batches):
            assert sum(len(batch) for batch in batches) == 41
            return load_mmpose_json(shared / "mmpose_wholebody" / "SOUP.json")

    monkeypatch.setattr(mmpose_backend, "MMPoseEstimator", Estimator)
    weights = tmp_path / "rtmpose.pth"
    weights.write_bytes(b"weights")
    video, mmpose_json = shared / "videos" / "SOUP.mp4", shared / "mmpose_wholebody" / "SOUP.json"
    result = _invoke(trained, video, mmpose_json, "--json", "--backend", "mmpose", "--pose-config", "my/config.py",
                     "--pose-checkpoint", weights, "--frame-size", "320", "240")
    assert result.exit_code == 0, result.output
    assert built["pose_config"] == "my/config.py" and built["pose_checkpoint"] == str(weights) and built["device"] == "cpu"
    from_video, from_json = _json_rows(result)
    assert from_video["predictions"] == from_json["predictions"]

    missing = _invoke(trained, video, "--backend", "mmpose")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: --backend mmpose needs --pose-checkpoint")


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"a,b\n1,2\n", b'{"epoch": 3}'])
def test_a_file_that_is_no_model_ends_with_one_line(tmp_path, content):
    """Text given as --model: the weights-only unpickler fails with KeyError, IndexError..."""
    model = tmp_path / "model.txt"
    model.write_bytes(content)
    result = _invoke(model, tmp_path / "input.npy")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {model}: not a readable PyTorch checkpoint "
                                     "(damaged, truncated or another kind of file)")


def test_trunk_norm_comes_from_the_model_file(trained, pose_inputs, tmp_path):
    from slrpipe.config import PreprocessParams
    from slrpipe.data.dataset import eval_view
    from slrpipe.data.preprocess import normalize
    from slrpipe.engine.checkpoints import load_checkpoint, save_checkpoint
    from slrpipe.pose.posefiles import mediapipe_to_49

    state = load_checkpoint(trained)
    assert state["preprocess"]["trunk_norm"] == "body"  # the training data's setting (the default) travels with the model
    frame, old = dict(state), dict(state)
    frame["preprocess"] = {**state["preprocess"], "trunk_norm": "frame"}
    old["preprocess"] = {k: v for k, v in state["preprocess"].items() if k != "trunk_norm"}
    for name, changed in (("frame.pt", frame), ("old.pt", old)):
        save_checkpoint(changed, tmp_path / name)
    folder = pose_inputs[0]
    item = PredictInput(folder, KIND_MP_FRAMES)
    body_view, frame_view, old_view = (Predictor(path, device="cpu").prepare(item)
                                       for path in (trained, tmp_path / "frame.pt", tmp_path / "old.pt"))
    # Body form: exactly normalize(..., trunk_norm=body) of the same recording.
    size = tuple(state["dataset"]["frame_size"])
    keypoints = mediapipe_to_49(load_mp_frames(folder), size)
    settings = PreprocessParams.model_validate(state["preprocess"])
    normalized = normalize(keypoints, size, settings)
    assert normalized.trunk_norm == "body"
    expected = eval_view(normalized.coords, normalized.mask, Predictor(trained, device="cpu").augment)
    assert torch.equal(body_view["joint"]["trunk"], expected["joint"]["trunk"])
    assert not torch.allclose(body_view["joint"]["trunk"], frame_view["joint"]["trunk"])
    assert torch.equal(body_view["joint"]["right_hand"], frame_view["joint"]["right_hand"])  # hand crops untouched
    # A model file from before trunk_norm was trained on the frame form, whatever today's default.
    assert torch.equal(old_view["joint"]["trunk"], frame_view["joint"]["trunk"])
