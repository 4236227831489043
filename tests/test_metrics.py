"""slrpipe.evaluation.metrics on small cases whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slrpipe.evaluation import metrics
from slrpipe.errors import SlrpipeError

# 4 samples, 6 classes (top-5 can miss only with more than 5). Unbalanced: class 0 has three
# samples, class 1 one, classes 2-5 none. Scores are distinct within a row: no ties here.
SCORES = np.array([
    [6, 5, 4, 3, 2, 1],  # label 0, rank 0: top-1 right
    [5, 6, 4, 3, 2, 1],  # label 0, rank 1: top-1 wrong (predicts 1), top-2/top-5 right
    [1, 6, 5, 4, 3, 2],  # label 0, rank 5: wrong even at top-5 (predicts 1)
    [1, 6, 5, 4, 3, 2],  # label 1, rank 0: top-1 right
], dtype=float)
LABELS = np.array([0, 0, 0, 1])


def test_topk_correct_and_rank():
    np.testing.assert_array_equal(metrics.true_rank(SCORES, LABELS), [0, 1, 5, 0])
    np.testing.assert_array_equal(metrics.topk_correct(SCORES, LABELS, 1), [True, False, False, True])
    np.testing.assert_array_equal(metrics.topk_correct(SCORES, LABELS, 2), [True, True, False, True])
    np.testing.assert_array_equal(metrics.topk_correct(SCORES, LABELS, 5), [True, True, False, True])
    np.testing.assert_array_equal(metrics.topk_correct(SCORES, LABELS, 6), [True, True, True, True])


def test_per_instance_and_per_class_differ_on_unbalanced_classes():
    # P-I: top-1 2/4, top-5 3/4.
    assert metrics.per_instance_accuracy(SCORES, LABELS, 1) == pytest.approx(0.5)
    assert metrics.per_instance_accuracy(SCORES, LABELS, 5) == pytest.approx(0.75)
    # P-C: class 0 top-1 1/3, top-5 2/3; class 1 1 and 1. Classes 2-5 are absent and ignored
    # (counting them as 0 would give top-1 (1/3 + 1) / 6 = 2/9).
    assert metrics.per_class_accuracy(SCORES, LABELS, 1) == pytest.approx((1 / 3 + 1) / 2)
    assert metrics.per_class_accuracy(SCORES, LABELS, 5) == pytest.approx((2 / 3 + 1) / 2)


def test_per_class_table():
    assert metrics.per_class_table(SCORES, LABELS, ks=(1, 5)) == [
        {"class": 0, "samples": 3, "top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)},
        {"class": 1, "samples": 1, "top1": 1.0, "top5": 1.0},
    ]


def test_confusion_matrix():
    # Top-1 predictions: 0, 1, 1, 1 for true classes 0, 0, 0, 1.
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = 1
    expected[0, 1] = 2
    expected[1, 1] = 1
    matrix = metrics.confusion_matrix(SCORES, LABELS, classes=6)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64
    with pytest.raises(SlrpipeError, match="6 classes, expected 7"):
        metrics.confusion_matrix(SCORES, LABELS, classes=7)


def test_ties_are_broken_by_class_index():
    scores = np.array([
        [0.5, 0.5, 0.0],  # label 1 ties with class 0, which has the smaller index: rank 1
        [0.5, 0.5, 0.0],  # label 0 ties with class 1: rank 0
        [0.2, 0.2, 0.2],  # constant scores, label 2: rank 2 (two tied classes come first)
        [0.2, 0.2, 0.2],  # constant scores, label 0: rank 0, as argmax would predict 0
    ])
    labels = np.array([1, 0, 2, 0])
    np.testing.assert_array_equal(metrics.true_rank(scores, labels), [1, 0, 2, 0])
    np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 1), [False, True, False, True])
    np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 2), [True, True, False, True])
    np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 3), [True, True, True, True])
    # Top-1 agrees with the confusion matrix's argmax (first maximum).
    np.testing.assert_array_equal(metrics.confusion_matrix(scores, labels, 3).diagonal(), [2, 0, 0])


def test_rank_is_the_position_in_a_stable_descending_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(200, 7)).astype(float)  # coarse values: many ties
    labels = rng.integers(0, 7, size=200)
    order = np.argsort(-scores, axis=1, kind="stable")
    expected = np.argmax(order == labels[:, None], axis=1)
    np.testing.assert_array_equal(metrics.true_rank(scores, labels), expected)
    np.testing.assert_array_equal(metrics.topk_correct(scores, labels, 1), scores.argmax(axis=1) == labels)


def test_k_and_label_errors():
    scores = np.zeros((2, 3))
    with pytest.raises(SlrpipeError, match="top-5 accuracy needs at least 5 classes, the model has 3"):
        metrics.per_instance_accuracy(scores, [0, 1], 5)
    with pytest.raises(SlrpipeError, match="top-4 accuracy needs at least 4 classes"):
        metrics.evaluate(scores, np.array([0, 1]), ks=(1, 4))
    with pytest.raises(SlrpipeError, match="k >= 1"):
        metrics.topk_correct(scores, [0, 1], 0)
    with pytest.raises(SlrpipeError, match="label 3 of sample 1 is outside the model's 3 classes"):
        metrics.topk_correct(scores, [0, 3], 1)
    with pytest.raises(SlrpipeError, match="label -1 of sample 0"):
        metrics.per_class_accuracy(scores, [-1, 0], 1)
    with pytest.raises(SlrpipeError, match="one per sample"):
        metrics.topk_correct(scores, [0, 1, 2], 1)
    with pytest.raises(SlrpipeError, match="integer"):
        metrics.topk_correct(scores, np.array([0.0, 1.0]), 1)
    with pytest.raises(SlrpipeError, match="sample 1 are NaN"):
        metrics.topk_correct(np.array([[0, 1, 2], [0, np.nan, 2]]), [0, 1], 1)
    with pytest.raises(SlrpipeError, match="no samples"):
        metrics.per_instance_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1)


def test_evaluate_with_subsets():
    subsets = {"confusing": np.array([True, False, True, False]), "normal": np.array([False, True, False, True])}
    result = metrics.evaluate(SCORES, LABELS, ks=(1, 5), subsets=subsets)
    assert result == pytest.approx({
        "per_instance/top1": 0.5,
        "per_instance/top5": 0.75,
        "per_class/top1": 2 / 3,
        "per_class/top5": 5 / 6,
        # confusing: samples 0 (rank 0) and 2 (rank 5), both class 0.
        "confusing/per_instance/top1": 0.5,
        "confusing/per_instance/top5": 0.5,
        "confusing/per_class/top1": 0.5,
        "confusing/per_class/top5": 0.5,
        # normal: sample 1 (class 0, rank 1) and 3 (class 1, rank 0).
        "normal/per_instance/top1": 0.5,
        "normal/per_instance/top5": 1.0,
        "normal/per_class/top1": 0.5,
        "normal/per_class/top5": 1.0,
    })
    assert list(result)[:4] == ["per_instance/top1", "per_instance/top5", "per_class/top1", "per_class/top5"]
    assert metrics.evaluate(SCORES, LABELS, ks=(1, 2, 5))["per_instance/top2"] == pytest.approx(0.75)


def test_evaluate_subset_errors():
    with pytest.raises(SlrpipeError, match="bool mask of the 4 samples"):
        metrics.evaluate(SCORES, LABELS, subsets={"confusing": np.array([0, 2])})
    with pytest.raises(SlrpipeError, match="bool mask"):
        metrics.evaluate(SCORES, LABELS, subsets={"confusing": np.array([True, False])})
    with pytest.raises(SlrpipeError, match="no samples to evaluate in subset 'normal'"):
        metrics.evaluate(SCORES, LABELS, subsets={"normal": np.zeros(4, dtype=bool)})
    with pytest.raises(SlrpipeError, match="without '/'"):
        metrics.evaluate(SCORES, LABELS, subsets={"a/b": np.ones(4, dtype=bool)})


GLOSSES = ["i'm fine", "Let's go", 'say "hi", twice', " spaced out "]


def test_scores_csv_round_trip(tmp_path):
    path = tmp_path / "scores.csv"
    ids = ["clip,1", "clip 2", 'clip "3"']
    scores = np.array([[0.1, 1 / 3, -2.5e-8, 7.0], [1e300, -0.0, 2.0, 3.0], [-np.inf, 0.5, 0.25, 1.0]])
    metrics.write_scores_csv(path, ids, [3, 0, 1], scores, GLOSSES)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == 'sample_id,label,i\'m fine,Let\'s go,"say ""hi"", twice", spaced out '
    assert lines[1] == '"clip,1",3,0.1,0.3333333333333333,-2.5e-08,7.0'
    read_ids, read_scores = metrics.read_scores_csv(path, glosses=GLOSSES)
    assert read_ids == ids
    np.testing.assert_array_equal(read_scores, scores)  # exact: shortest round-tripping text

    # float32 scores (torch logits) are written short and read back to the same float32.
    small = np.array([[0.1, 0.2, 0.3, 1 / 3]], dtype=np.float32)
    metrics.write_scores_csv(path, ["a"], None, small, GLOSSES)
    assert path.read_text(encoding="utf-8").splitlines()[1] == "a,,0.1,0.2,0.3,0.33333334"
    np.testing.assert_array_equal(metrics.read_scores_csv(path)[1].astype(np.float32), small)


def test_scores_csv_without_label_column_and_header_check(tmp_path):
    path = tmp_path / "rgb.csv"
    path.write_text('sample_id,a,"b, c"\nx,1.5,-2\ny,0,1e-3\n', encoding="utf-8")
    ids, scores = metrics.read_scores_csv(path, glosses=["a", "b, c"])
    assert ids == ["x", "y"]
    np.testing.assert_array_equal(scores, [[1.5, -2.0], [0.0, 0.001]])
    with pytest.raises(SlrpipeError, match=r"column 3 \(class 1\) is headed 'b, c', expected gloss 'b'"):
        metrics.read_scores_csv(path, glosses=["a", "b"])
    with pytest.raises(SlrpipeError, match="2 score columns, our model has 3 classes"):
        metrics.read_scores_csv(path, glosses=["a", "b, c", "d"])


@pytest.mark.parametrize("text, message", [
    ("id,label,a\nx,,1\n", "first column must be headed 'sample_id'"),
    ("sample_id,label\n", "no score columns"),
    ("sample_id,label,a,b\nx,,1\n", "line 2: 3 fields, the header has 4"),
    ("sample_id,label,a,b\nx,,1,oops\n", "line 2: score 'oops' of 'b' is not a number"),
    ("sample_id,a\nx,1\nx,2\n", "line 3: sample id 'x' repeats line 2"),
    ("sample_id,a\n,1\n", "line 2: empty sample id"),
])
def test_scores_csv_format_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SlrpipeError, match=message):
        metrics.read_scores_csv(path)


def test_read_scores_csv_missing_file(tmp_path):
    with pytest.raises(SlrpipeError, match="not found"):
        metrics.read_scores_csv(tmp_path / "nope.csv")


# Late fusion, two classes. Ours are probabilities (the evaluate stage's softmax output); the
# other model gives logits chosen so that their softmax is exact: softmax([0, log 3]) = [1/4, 3/4].
L3 = math.log(3)
OUR_IDS = ["a", "b", "c"]
OUR = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45]])
OTHER_IDS = ["c", "a", "b"]                          # another order
OTHER = np.array([[5, 5], [0, L3], [L3, 0]])         # c [.5 .5], a [.25 .75], b [.75 .25]
OTHER_PROBABILITIES = np.array([[0.5, 0.5], [0.25, 0.75], [0.75, 0.25]])
# By hand, ours + the other's probabilities:
#   a: [0.9 + 0.25, 0.1 + 0.75] = [1.15, 0.85]   b: [0.3 + 0.75, 0.7 + 0.25] = [1.05, 0.95]
#   c: [0.55 + 0.5, 0.45 + 0.5] = [1.05, 0.95]
FUSED = [[1.15, 0.85], [1.05, 0.95], [1.05, 0.95]]


def test_fuse_adds_our_probabilities_as_they_are():
    fused = metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER)
    np.testing.assert_allclose(fused, FUSED)
    # Sample a is where a second softmax of our probabilities went wrong: softmax([0.9, 0.1]) =
    # [0.69, 0.31], plus [0.25, 0.75] = [0.94, 1.06] would follow the other model to class 1.
    assert fused[0].argmax() == 0
    np.testing.assert_allclose(metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER_PROBABILITIES, normalize="none"), FUSED)


def test_fused_accuracy_beats_either_model_on_a_hand_built_case():
    labels = np.array([0, 0, 1])  # a, b, c
    # Ours alone: a -> 0 right, b -> 1 wrong, c -> 0 wrong. Other alone: a -> 1 wrong,
    # b -> 0 right, c tie -> 0 wrong. Fused (FUSED): a -> 0 right, b -> 0 right, c -> 0 wrong.
    assert metrics.per_instance_accuracy(OUR, labels, 1) == pytest.approx(1 / 3)
    assert metrics.per_instance_accuracy(metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER), labels, 1) == pytest.approx(2 / 3)


def test_fuse_through_csv_files(tmp_path):
    ours, theirs = tmp_path / "ours.csv", tmp_path / "rgb.csv"
    metrics.write_scores_csv(ours, OUR_IDS, [0, 0, 1], OUR, ["yes", "no"])
    metrics.write_scores_csv(theirs, OTHER_IDS, None, OTHER, ["yes", "no"])
    fused = metrics.fuse(*metrics.read_scores_csv(ours), *metrics.read_scores_csv(theirs, glosses=["yes", "no"]))
    np.testing.assert_allclose(fused, FUSED)


def test_fuse_refuses_scores_of_the_wrong_kind():
    with pytest.raises(SlrpipeError, match="our scores of sample 'b' are not probabilities"):
        metrics.fuse(OUR_IDS, np.array([[0.5, 0.5], [0, L3], [0.5, 0.5]]), OTHER_IDS, OTHER)
    with pytest.raises(SlrpipeError, match="probabilities already .* set evaluate.fusion_normalize: none"):
        metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER_PROBABILITIES)
    with pytest.raises(SlrpipeError, match="the other model's scores of sample 'a' are not probabilities .*softmax"):
        metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER, normalize="none")


def test_fuse_errors():
    with pytest.raises(SlrpipeError, match="lack 1 of our sample ids, the first is 'b'"):
        metrics.fuse(OUR_IDS, OUR, ["c", "a"], OTHER[:2])
    with pytest.raises(SlrpipeError, match="have 2 sample ids that we do not, the first is 'd'"):
        metrics.fuse(OUR_IDS, OUR, ["d", *OTHER_IDS, "e"], np.vstack([OTHER, [[0, 0], [0, 0]]]))
    with pytest.raises(SlrpipeError, match="our model scores 2 classes, the other model 3"):
        metrics.fuse(OUR_IDS, OUR, OTHER_IDS, np.zeros((3, 3)))
    with pytest.raises(SlrpipeError, match="sample id 'c' twice"):
        metrics.fuse(OUR_IDS, OUR, ["c", "c", "a"], OTHER)
    with pytest.raises(SlrpipeError, match="do not fit 2 sample ids"):
        metrics.fuse(OUR_IDS, OUR, ["c", "a"], OTHER)
    with pytest.raises(SlrpipeError, match="normalize must be"):
        metrics.fuse(OUR_IDS, OUR, OTHER_IDS, OTHER, normalize="sigmoid")


# --- Bootstrap intervals and per-signer accuracy --------------------------------------------


@pytest.mark.parametrize("correct", [[True] * 7, [False] * 7])
def test_bootstrap_of_all_right_or_all_wrong_is_a_point(correct):
    # Every resample of identical outcomes has the same accuracy: the interval has no width.
    value = float(correct[0])
    intervals = metrics.bootstrap_intervals(np.array(correct), np.arange(7) % 3, draws=200, seed=0)
    assert intervals == {"per_instance": (value, value), "per_class": (value, value)}


def test_bootstrap_of_one_right_one_wrong_spans_zero_to_one():
    # Two samples, one right: a resample holds the right one 0, 1 or 2 times, accuracy 0, 1/2 or 1
    # with probabilities 1/4, 1/2, 1/4. The 2.5 % and 97.5 % quantiles are 0 and 1.
    intervals = metrics.bootstrap_intervals(np.array([True, False]), np.array([0, 0]), draws=2000, seed=0)
    assert intervals["per_instance"] == (0.0, 1.0)


def test_bootstrap_interval_holds_the_point_estimate_and_repeats_with_its_seed():
    rng = np.random.default_rng(5)
    correct, labels = rng.random(40) < 0.7, np.arange(40) % 4
    intervals = metrics.bootstrap_intervals(correct, labels, draws=500, seed=3)
    low, high = intervals["per_instance"]
    assert low < correct.mean() < high and high - low < 0.5
    low, high = intervals["per_class"]
    assert low < metrics.mean_per_class(correct, labels) < high
    assert metrics.bootstrap_intervals(correct, labels, draws=500, seed=3) == intervals
    assert metrics.bootstrap_intervals(correct, labels, draws=500, seed=4) != intervals


def test_signer_bootstrap_resamples_whole_signers():
    # Signer a: 10 samples, all right; signer b: 2 samples, all wrong. Drawing 2 signers gives
    # {a, a} (accuracy 1) or {b, b} (accuracy 0) a quarter of the time each, so the signer interval
    # is [0, 1]. Resampling the 12 samples independently almost never draws mostly b's two samples:
    # that interval stays far above 0.
    correct = np.array([True] * 10 + [False] * 2)
    signers = ["a"] * 10 + ["b"] * 2
    labels = np.zeros(12, dtype=np.int64)
    by_signer = metrics.bootstrap_intervals(correct, labels, draws=2000, seed=0, groups=signers)
    assert by_signer["per_instance"] == (0.0, 1.0)
    low, high = metrics.bootstrap_intervals(correct, labels, draws=2000, seed=0)["per_instance"]
    assert 0.5 < low < 10 / 12 and high == 1.0


def test_signer_bootstrap_keeps_the_noise_within_signers():
    # Two signers, each 5 right of 10: every draw of whole signers alone scores 1/2, an interval of
    # no width. Redrawing each drawn signer's samples keeps their noise: 20 fair coin flips, whose
    # mean has a standard deviation of 0.11, so the interval reaches about 0.5 -+ 0.2.
    correct = np.array([True, False] * 10)
    signers, labels = ["a"] * 10 + ["b"] * 10, np.zeros(20, dtype=np.int64)
    low, high = metrics.bootstrap_intervals(correct, labels, draws=2000, seed=0, groups=signers)["per_instance"]
    assert 0.2 <= low <= 0.35 and 0.65 <= high <= 0.8


def test_bootstrap_rejects_bad_input():
    with pytest.raises(SlrpipeError, match="draws >= 1"):
        metrics.bootstrap_intervals(np.array([True]), np.array([0]), draws=0, seed=0)
    with pytest.raises(SlrpipeError, match="1 group ids for 2 samples"):
        metrics.bootstrap_intervals(np.array([True, False]), np.array([0, 1]), draws=10, seed=0, groups=["a"])
    with pytest.raises(SlrpipeError, match="no samples to evaluate"):
        metrics.bootstrap_intervals(np.array([], dtype=bool), np.array([], dtype=np.int64), draws=10, seed=0)


def test_top1_intervals_are_named_beside_their_values():
    names = set(metrics.top1_intervals(SCORES, LABELS, draws=50, seed=0))
    assert names == {f"{level}/top1_ci_{end}" for level in ("per_instance", "per_class") for end in ("low", "high")}
    with_signers = metrics.top1_intervals(SCORES, LABELS, draws=200, seed=0, signers=["p", "q", "q", "p"])
    assert set(with_signers) == names | {n.replace("_ci_", "_signer_ci_") for n in names}
    # Signer p's samples (0 and 3) are right, q's (1 and 2) wrong: a quarter of the draws of two
    # signers are {q, q}, accuracy 0, and a quarter {p, p}, accuracy 1.
    assert (with_signers["per_instance/top1_signer_ci_low"], with_signers["per_instance/top1_signer_ci_high"]) == (0, 1)


def test_per_signer_table():
    # Top-1 right: samples 0 and 3.
    assert metrics.per_signer_table(SCORES, LABELS, ["s2", "s1", "s2", "s1"]) == [
        {"signer": "s1", "samples": 2, "top1": 0.5},
        {"signer": "s2", "samples": 2, "top1": 0.5},
    ]
    assert metrics.per_signer_table(SCORES, LABELS, ["x", "x", "x", "y"]) == [
        {"signer": "x", "samples": 3, "top1": pytest.approx(1 / 3)},
        {"signer": "y", "samples": 1, "top1": 1.0},
    ]
    with pytest.raises(SlrpipeError, match="3 signer ids for 4 samples"):
        metrics.per_signer_table(SCORES, LABELS, ["a", "b", "c"])


def test_fused_and_subset_metrics_get_their_own_intervals():
    from slrpipe.config import EvaluateParams
    from slrpipe.evaluation.evaluate import scored_metrics

    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    scores, fused = rng.random((30, 3)), rng.random((30, 3))
    subset = np.arange(30) < 12
    signers = [f"p{i % 3}" for i in range(30)]
    found, intervals = scored_metrics(EvaluateParams(bootstrap_draws=300, bootstrap_seed=4), scores, labels, [1],
                                    {"confusing": subset}, signers, fused)
    assert found["test/fused/per_instance/top1"] == metrics.per_instance_accuracy(fused, labels, 1)
    top1_intervals = metrics.top1_intervals
    own = top1_intervals(fused, labels, 300, 4, signers)
    assert {k: v for k, v in intervals.items() if k.startswith("test/fused/")} == {f"test/fused/{k}": v for k, v in own.items()}
    mine = top1_intervals(scores[subset], labels[subset], 300, 4, [s for s, keep in zip(signers, subset) if keep])
    assert intervals["test/confusing/per_class/top1_signer_ci_high"] == mine["per_class/top1_signer_ci_high"]
    assert intervals["test/per_instance/top1_ci_low"] == top1_intervals(scores, labels, 300, 4)["per_instance/top1_ci_low"]
