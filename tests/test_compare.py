"""Paired comparison of two runs' test scores (`slrpipe compare`, results.md's "this run minus ...")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.compare import compare_scores
from slrpipe.evaluation.metrics import bootstrap_intervals, paired_difference, write_scores_csv
from slrpipe.h5io import RaggedWriter
from stages.cli import app

GLOSSES = ["a", "b", "c", "d"]
LABELS = np.arange(40) % 4
IDS = [f"s{i}" for i in range(40)]


def scores_file(path, right: np.ndarray, ids=IDS, labels=LABELS):
    """A scores CSV whose top-1 is the label where `right` is True and the next class elsewhere."""
    predicted = np.where(right, labels, (labels + 1) % 4)
    scores = np.full((len(labels), 4), 0.1)
    scores[np.arange(len(labels)), predicted] = 0.7
    write_scores_csv(path, ids, labels, scores, GLOSSES)
    return path


def signer_file(path, signers):
    with RaggedWriter(path, {"x": ((), np.float32)}) as writer:
        for sample_id, signer in zip(IDS, signers):
            writer.append({"x": np.zeros(1, np.float32)}, sample_id=sample_id, signer=signer)
    return path


def test_a_model_against_one_that_is_always_wrong(tmp_path):
    right = np.arange(40) % 5 != 0  # 32 of 40 right
    found = compare_scores(scores_file(tmp_path / "a.csv", right), scores_file(tmp_path / "b.csv", np.zeros(40, bool)),
                           draws=500, seed=3)
    assert found.top1_a["per_instance"] == 0.8 and found.top1_b["per_instance"] == 0.0
    # B adds nothing to resample, so the paired interval is A's own interval (the same seeded resamples).
    own = bootstrap_intervals(right, LABELS, 500, 3)
    assert found.difference["per_instance"] == (pytest.approx(0.8), *own["per_instance"])
    assert found.difference["per_class"][1:] == own["per_class"]
    assert found.signers is None and found.signer_difference is None
    assert found.verdict("A", "B") == "A beats B: the interval over the 40 test samples lies above 0"


def test_pairing_cancels_what_both_get_right_or_wrong(tmp_path):
    base = np.arange(40) % 2 == 0
    better = base.copy()
    better[1] = True  # A is right on one more sample than B, and agrees with B everywhere else
    difference, low, high = paired_difference(better, base, LABELS, 1000, 0)["per_instance"]
    assert difference == pytest.approx(1 / 40) and 0 <= low <= high
    # Unpaired, each accuracy alone varies by about +-15 points over these resamples; the difference hardly.
    alone_low, alone_high = bootstrap_intervals(base, LABELS, 1000, 0)["per_instance"]
    assert high - low < (alone_high - alone_low) / 2
    found = compare_scores(scores_file(tmp_path / "a.csv", better), scores_file(tmp_path / "b.csv", base), draws=1000)
    assert found.verdict("A", "B").startswith("A and B are within noise of each other")  # 1 of 40 can be chance
    same = compare_scores(tmp_path / "a.csv", tmp_path / "a.csv", draws=100)
    assert same.difference["per_instance"] == (0.0, 0.0, 0.0)


def test_over_signers_when_the_dataset_names_them(tmp_path):
    signers = [f"p{i % 4}" for i in range(40)]
    dataset = signer_file(tmp_path / "dataset.h5", signers)
    right = np.array([signer != "p0" for signer in signers])  # A fails one signer entirely, B is always right
    found = compare_scores(scores_file(tmp_path / "a.csv", right), scores_file(tmp_path / "b.csv", np.ones(40, bool)),
                           dataset, draws=500)
    assert found.signers == 4
    point, low, high = found.signer_difference["per_instance"]
    assert point == pytest.approx(-0.25) and low < found.difference["per_instance"][1] and high <= 0
    assert "the 4 test signers" in found.verdict("A", "B")


def test_different_samples_or_labels_are_refused(tmp_path):
    a = scores_file(tmp_path / "a.csv", np.ones(40, bool))
    with pytest.raises(SlrpipeError, match="'s39'.*same test samples"):
        compare_scores(a, scores_file(tmp_path / "b.csv", np.ones(39, bool), IDS[:39], LABELS[:39]))
    with pytest.raises(SlrpipeError, match="different labels"):
        compare_scores(a, scores_file(tmp_path / "c.csv", np.ones(40, bool), labels=(LABELS + 1) % 4))


def test_compare_command(tmp_path):
    a = scores_file(tmp_path / "a.csv", np.ones(40, bool))
    b = scores_file(tmp_path / "b.csv", np.arange(40) % 2 == 0)
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--dataset", str(tmp_path / "none.h5"), "--draws", "300"])
    assert result.exit_code == 0, result.output
    assert "P-I top-1: A 100.00, B 50.00, A - B +50.00 points [" in result.output and "A beats B" in result.output
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--draws", "300", "--json"])
    data = json.loads(result.output)
    assert data["a_minus_b"]["per_instance"]["difference"] == 0.5 and data["a_minus_b_over_signers"] is None
    missing = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "nothing.csv")])
    assert missing.exit_code == 1 and "nothing.csv not found" in missing.output
