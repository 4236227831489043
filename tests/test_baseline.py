"""The logistic-regression baseline (issue 13): body-normalized features, `finetune.protocol:
baseline` end to end (model file, evaluate, predict), and the always-on baseline stage, on a
synthetic dataset whose test signer sits where no training signer does."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from slrpipe.config import parse_params
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.preprocess import normalize
from slrpipe.config import PreprocessParams
from slrpipe.evaluation.baseline import run_baseline
from slrpipe.evaluation.evaluate import run_evaluate
from slrpipe.evaluation.predict import Predictor, find_inputs
from slrpipe.finetune.baseline import fit_logistic
from slrpipe.finetune.train import run_finetune
from slrpipe.model.baseline import BASELINE_FORMAT, BASELINE_FRAMES, BaselineClassifier, dataset_features, features
from slrpipe.model.classifier import load_model
from tests.conftest import REPO, layout
from tests.synthetic import FRAME_SIZE, GLOSSES, keypoints, write_dataset


def make_params(tmp_path, **sections):
    data = {"dataset": {"source": "mp_data", "root": str(tmp_path)},
            "finetune": {"protocol": "baseline", "device": "cpu", **sections.pop("finetune", {})},
            "evaluate": {"device": "cpu", "bootstrap_draws": 200}, **sections}
    return parse_params(layout(data), REPO / "params.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "dataset.h5")


def _features(sample_keypoints):
    sample = normalize(sample_keypoints, FRAME_SIZE, PreprocessParams(trunk_norm="frame"))  # the frame form, as the demo stores it
    return features(sample.coords, sample.mask, sample.trunk_origin, sample.trunk_unit, FRAME_SIZE)


def test_features_do_not_see_where_the_signer_sits_or_how_close():
    rng = np.random.default_rng(0)
    near = keypoints(0, 30, (420, 300), 200, rng)
    # The same performance, shifted and shrunk about the image origin.
    far = near.copy()
    far[..., :2] = near[..., :2] * 0.55 + np.array([-40, 10])
    a, b = _features(near), _features(far)
    assert a.shape == (BASELINE_FRAMES * 49 * 2,)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # The frame form the dataset stores does see it: without the body placement they differ.
    frame_a = normalize(near, FRAME_SIZE, PreprocessParams(trunk_norm="frame")).coords
    frame_b = normalize(far, FRAME_SIZE, PreprocessParams(trunk_norm="frame")).coords
    assert np.abs(frame_a[:, :7] - frame_b[:, :7]).max() > 0.1


def test_features_keep_the_frame_form_when_shoulders_are_never_seen():
    rng = np.random.default_rng(0)
    points = keypoints(1, 20, (320, 240), 150, rng)
    points[:, [1, 4], 2] = 0.0  # both shoulders below the score threshold in every frame
    sample = normalize(points, FRAME_SIZE, PreprocessParams(trunk_norm="frame"))
    out = features(sample.coords, sample.mask, sample.trunk_origin, sample.trunk_unit, FRAME_SIZE).reshape(BASELINE_FRAMES, 49, 2)
    # Nose of the first frame: the pixel position divided by the frame size, as preprocess's frame form.
    np.testing.assert_allclose(out[0, 0], points[0, 0, :2] / np.array(FRAME_SIZE), atol=1e-5)
    assert not out[:, [1, 4]].any()  # the masked shoulders stay 0


def test_two_classes_give_the_fitted_sigmoid_as_a_softmax():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(40, 6)).astype(np.float32)
    labels = np.where(inputs[:, 0] + 0.3 * rng.normal(size=40) > 0, 2, 0)  # classes 0 and 2 of 3: class 1 never seen
    model = fit_logistic(inputs, labels, 3, C=1.0)
    probabilities = torch.softmax(model(torch.from_numpy(inputs)), 1).numpy()
    standardized = (inputs - inputs.mean(0)) / inputs.std(0)
    expected = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(standardized, labels).predict_proba(standardized)
    np.testing.assert_allclose(probabilities[:, [0, 2]], expected, atol=1e-4)
    assert probabilities[:, 1].max() < 1e-6


def test_baseline_protocol_end_to_end(dataset, tmp_path):
    params = make_params(tmp_path)
    result = run_finetune(params, dataset, tmp_path / "no-pretraining.pt", tmp_path / "model", tmp_path / "live")
    assert result.selected["select"] == "val" and result.selected["C"] in (0.01, 0.1, 1.0, 10.0)
    # Only tensors and plain values: torch's safe loader takes it as it is.
    state = torch.load(tmp_path / "model" / "best.pt", weights_only=True)
    assert state["format"] == BASELINE_FORMAT and state["glosses"] == GLOSSES
    assert set(state["model"]) == {"mean", "scale", "weight", "bias"} and state["model"]["weight"].shape == (3, 1568)
    assert isinstance(state["augment"]["frames"], int)
    assert (tmp_path / "model" / "last.pt").is_file()  # the finetune stage's other output
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["val"]["top1"] == 1.0

    evaluated = run_evaluate(params, tmp_path / "model" / "best.pt", dataset, tmp_path / "eval")
    # The test signer sits lower, further right and closer than any training signer: the body form takes that out.
    assert evaluated.metrics["test/per_instance/top1"] == 1.0
    with (tmp_path / "eval" / "scores.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["sample_id", "label", *GLOSSES] and len(rows) == 1 + 12
    probabilities = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    with np.load(tmp_path / "eval" / "embeddings.npz") as embeddings:
        assert set(embeddings.files) == {"labels", "sample_ids"}  # no encoder, no features


def test_baseline_model_predicts_a_new_pose_file(dataset, tmp_path):
    run_finetune(make_params(tmp_path), dataset, tmp_path / "none.pt", tmp_path / "model", None)
    model, meta = load_model(tmp_path / "model" / "best.pt")
    assert isinstance(model, BaselineClassifier)
    # A MediaPipe (T, 258) array of a signer in yet another place: pose 33 x 4, then both hands 21 x 3.
    rng = np.random.default_rng(5)
    points = keypoints(2, 40, (250, 330), 170, rng)  # the "circle" path
    vectors = np.zeros((40, 258), dtype=np.float32)
    pose = vectors[:, :132].reshape(40, 33, 4)
    for slot, mediapipe in enumerate((0, 11, 13, 15, 12, 14, 16)):
        pose[:, mediapipe, :2] = points[:, slot, :2] / np.array(FRAME_SIZE)
        pose[:, mediapipe, 3] = 1.0
    vectors[:, 132:195] = np.concatenate([points[:, 7:28, :2] / np.array(FRAME_SIZE), np.zeros((40, 21, 1))], 2).reshape(40, 63)
    vectors[:, 195:258] = np.concatenate([points[:, 28:49, :2] / np.array(FRAME_SIZE), np.zeros((40, 21, 1))], 2).reshape(40, 63)
    clip = tmp_path / "clip.npy"
    np.save(clip, vectors)
    predictor = Predictor(tmp_path / "model" / "best.pt", device="cpu")
    [prediction] = list(predictor.predict(find_inputs([clip]), top_k=2, progress=False))
    assert prediction.error is None and prediction.predictions[0][0] == "circle"


def test_baseline_stage_writes_split_named_metrics_and_scores(dataset, tmp_path):
    result = run_baseline(make_params(tmp_path, finetune={"protocol": "finetune"}), dataset, tmp_path / "baseline")
    written = json.loads((tmp_path / "baseline" / "metrics.json").read_text())
    test = written["baseline"]["test"]
    assert test["per_instance"]["top1"] == 1.0 and test["samples"] == 12 and test["signers"] == 1
    assert {"top1_ci_low", "top1_ci_high"} <= set(test["per_instance"]) and "top5" not in test["per_instance"]
    assert written["baseline"]["selected"]["C"] == result.C and written["baseline"]["selected"]["val"]["top1"] == 1.0
    ids = [row[0] for row in csv.reader((tmp_path / "baseline" / "scores.csv").open())][1:]
    assert ids == PoseDataset(dataset, make_params(tmp_path).augment, "eval", split="test").sample_ids


def test_c_is_chosen_on_validation_never_on_test(dataset, tmp_path, monkeypatch):
    from slrpipe.finetune import baseline as fitting

    read = []
    original = fitting.dataset_features
    monkeypatch.setattr(fitting, "dataset_features", lambda data, *a: read.append(set(np.asarray(data.indices))) or original(data, *a))
    fitting.fit_baseline(make_params(tmp_path), dataset)
    test = set(PoseDataset(dataset, make_params(tmp_path).augment, "eval", split="test").indices)
    assert read and all(not (chosen & test) for chosen in read)


def test_dataset_features_follow_the_dataset_order(dataset):
    data = PoseDataset(dataset, make_params(dataset.parent).augment, "eval", split="val")
    inputs, labels = dataset_features(data)
    assert inputs.shape == (len(data), 1568) and labels.tolist() == [data[i]["label"].item() for i in range(len(data))]
