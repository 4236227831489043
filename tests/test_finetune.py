"""Downstream protocols and evaluation on real KSL data with a tiny model."""

import csv
import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from slrpipe.engine import loop as engine_loop
from slrpipe.finetune import train as finetune_module
from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.config import FinetuneParams, PretrainParams
from slrpipe.data.dataset import PoseDataset
from slrpipe.errors import ParamsError, SlrpipeError
from slrpipe.evaluation.evaluate import run_evaluate
from slrpipe.finetune.train import run_finetune
from slrpipe.model.classifier import build_classifier, load_model
from slrpipe.evaluation.metrics import read_scores_csv, write_scores_csv
from slrpipe.model import part_of
from slrpipe.pretrain.model import Pretrainer
from slrpipe.pretrain.train import run_pretrain
from slrpipe.evaluation.report.render import selection_text
from tests.conftest import TINY, tiny_params
from tests.test_pretrain import _view


@pytest.fixture(scope="module")
def pretrained(ksl_dataset, tmp_path_factory):
    root, dataset = ksl_dataset
    out = tmp_path_factory.mktemp("pretrained")
    run_pretrain(tiny_params(root, 2, knn_every=10), dataset, out, None, resume=False)
    return out / "checkpoint.pt"


def _finetune(ksl_dataset, pretrained, tmp_path, epochs=2, **finetune):
    root, dataset = ksl_dataset
    protocol = finetune.get("protocol", "finetune")
    schedules = {name: {"epochs": epochs, "lr_steps": []} for name in ("finetune", "linear", "semi", "scratch")}
    params = tiny_params(root, 2, finetune={"schedules": schedules, **finetune})
    result = run_finetune(params, dataset, pretrained, tmp_path / protocol, None, resume=False)
    return params, result, tmp_path / protocol / "best.pt"


def test_finetune_starts_from_the_pretrained_query_encoders(ksl_dataset, pretrained, tmp_path, monkeypatch):
    loaded = {}
    original = finetune_module.SignClassifier.load_pretrained

    def spy(self, state, source):
        original(self, state, source)
        loaded.update({f"{m}.{k}": v.clone() for m in self.branches for k, v in self.encoders[m].state_dict().items()})

    monkeypatch.setattr(finetune_module.SignClassifier, "load_pretrained", spy)
    _finetune(ksl_dataset, pretrained, tmp_path, epochs=1)
    state = load_checkpoint(pretrained)["model"]
    for name, value in loaded.items():
        branch, key = name.split(".", 1)
        assert torch.equal(value, state[f"query.{branch}.encoder.{key}"]), name


def test_linear_protocol_leaves_encoders_bit_identical(ksl_dataset, pretrained, tmp_path):
    _, result, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=2, protocol="linear")
    trained = load_checkpoint(best)["model"]
    state = load_checkpoint(pretrained)["model"]
    encoder_keys = [k for k in trained if k.startswith("encoders.")]
    assert encoder_keys
    for key in encoder_keys:  # weights and BatchNorm statistics alike
        branch, rest = key[len("encoders."):].split(".", 1)
        assert torch.equal(trained[key], state[f"query.{branch}.encoder.{rest}"]), key
    classifier = [k for k in trained if k.startswith("classifiers.")]
    assert classifier and result.epochs_run == 2


def test_semi_trains_on_exactly_the_saved_ids(ksl_dataset, pretrained, tmp_path, monkeypatch):
    seen = []
    original = finetune_module.PoseDataset.__getitem__

    def spy(self, key):
        if self.mode == "train":
            seen.append(self.sample_ids[key[1]])  # the training loader's keys are (epoch, position)
        return original(self, key)

    monkeypatch.setattr(finetune_module.PoseDataset, "__getitem__", spy)
    _finetune(ksl_dataset, pretrained, tmp_path, epochs=1, protocol="semi", label_fraction=0.4)
    saved = json.loads((ksl_dataset[1].parent / "label_subsets.json").read_text())["40%"]
    assert sorted(set(seen)) == sorted(saved)


def test_scratch_loads_no_pretrained_weights(ksl_dataset, tmp_path, monkeypatch):
    def refuse(*_):
        raise AssertionError("scratch must not read a checkpoint")

    monkeypatch.setattr(finetune_module, "load_checkpoint", refuse)
    _, result, best = _finetune(ksl_dataset, tmp_path / "no-such-checkpoint.pt", tmp_path, epochs=1, protocol="scratch")
    assert best.is_file() and result.epochs_run == 1


def test_missing_pretrained_checkpoint_is_one_clear_line(ksl_dataset, tmp_path):
    with pytest.raises(SlrpipeError, match="pretrained checkpoint .* not found: run the pretrain stage"):
        _finetune(ksl_dataset, tmp_path / "absent.pt", tmp_path, epochs=1)


def test_evaluate_writes_scores_metrics_and_fuses_by_id(ksl_dataset, pretrained, tmp_path):
    params, _, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=2)
    model, meta = load_model(best)
    assert meta["glosses"] == ["bad", "glad", "no", "yes"] and not model.training
    out = tmp_path / "eval"
    result = run_evaluate(params, best, ksl_dataset[1], out)
    ids, scores = read_scores_csv(out / "scores.csv")
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["test", "selected"]  # every metric is named by the split it was measured on
    assert len(ids) == result.samples == metrics["test"]["samples"]
    # 4 classes: no top-5. The test split is one recording session, one signer: an interval over
    # samples only, each right after the value it bounds.
    for level in ("per_instance", "per_class"):
        node = metrics["test"][level]
        assert list(node) == ["top1", "top1_ci_low", "top1_ci_high"]
        assert node["top1_ci_low"] <= node["top1"] <= node["top1_ci_high"]
    assert set(result.metrics) == {"test/per_instance/top1", "test/per_class/top1"}
    assert metrics["test"]["signers"] == result.signers == 1
    correct = scores.argmax(axis=1) == np.asarray(_labels(out))
    signer_rows = (out / "per_signer.csv").read_text().splitlines()
    assert signer_rows[0] == "signer,samples,top1" and len(signer_rows) == 2
    signer, count, top1 = signer_rows[1].split(",")
    assert int(count) == len(ids) and float(top1) == pytest.approx(correct.mean(), abs=1e-6)
    lines = (out / "confusion.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted" and len(lines) == len(ids) + 1
    embeddings = np.load(out / "embeddings.npz")
    assert embeddings["joint"].shape[0] == embeddings["motion"].shape[0] == len(ids)

    # Late fusion with another model's scores, given in another order.
    other = np.random.default_rng(0).random(scores.shape)
    order = np.random.default_rng(1).permutation(len(ids))
    write_scores_csv(tmp_path / "rgb.csv", [ids[i] for i in order], None, other[order], meta["glosses"])
    fused_params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"fusion_scores": tmp_path / "rgb.csv"})})
    fused = run_evaluate(fused_params, best, ksl_dataset[1], tmp_path / "eval_fused")
    # Our scores.csv holds probabilities, added as they are; the other file's values are logits.
    other_probabilities = np.exp(other) / np.exp(other).sum(axis=1, keepdims=True)
    expected = np.mean((scores + other_probabilities).argmax(axis=1) == np.asarray(_labels(out)))
    assert fused.metrics["test/fused/per_instance/top1"] == pytest.approx(expected)


def test_evaluate_intervals_over_signers_and_per_signer_table(ksl_dataset, ksl_no_val, pretrained, tmp_path):
    params, _, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=1)
    out = tmp_path / "eval"
    result = run_evaluate(params, best, ksl_no_val[1], out)  # its test split spans all 5 sessions
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    assert metrics["signers"] == result.signers == 5
    for level in ("per_instance", "per_class"):
        node = metrics[level]
        assert list(node) == ["top1", "top1_ci_low", "top1_ci_high", "top1_signer_ci_low", "top1_signer_ci_high"]
        assert node["top1_signer_ci_low"] <= node["top1"] <= node["top1_signer_ci_high"]
    ids, scores = read_scores_csv(out / "scores.csv")
    correct = scores.argmax(axis=1) == np.asarray(_labels(out))
    with h5py.File(ksl_no_val[1], "r") as handle:
        signer_of = dict(zip((v.decode() for v in handle["samples/sample_id"][:]),
                             (v.decode() for v in handle["samples/signer"][:])))
    signers = np.array([signer_of[sample_id] for sample_id in ids])
    with (out / "per_signer.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["signer"] for row in rows] == sorted(set(signers))
    for row in rows:
        mine = signers == row["signer"]
        assert int(row["samples"]) == mine.sum() and float(row["top1"]) == pytest.approx(correct[mine].mean(), abs=1e-6)

    # bootstrap_draws: 0 leaves the intervals out, never the per-signer table.
    off = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"bootstrap_draws": 0})})
    run_evaluate(off, best, ksl_no_val[1], tmp_path / "eval_off")
    assert set(json.loads((tmp_path / "eval_off" / "metrics.json").read_text())["test"]["per_instance"]) == {"top1"}
    assert (tmp_path / "eval_off" / "per_signer.csv").read_text() == (out / "per_signer.csv").read_text()


def _labels(out):
    import csv

    with (out / "scores.csv").open() as handle:
        return [int(row["label"]) for row in csv.DictReader(handle)]


def test_a_damaged_pretrain_checkpoint_says_how_to_restore_it(ksl_dataset, pretrained, tmp_path):
    damaged = tmp_path / "checkpoint.pt"
    damaged.write_bytes(pretrained.read_bytes()[:1000])
    with pytest.raises(SlrpipeError) as info:
        _finetune(ksl_dataset, damaged, tmp_path, epochs=1)
    assert str(info.value) == (f"{damaged}: not a readable PyTorch checkpoint (damaged, truncated or another kind of file): "
                               f"restore it with `dvc checkout --force {damaged}`, or rerun the stage that writes it (`dvc repro`)")


def _record_epochs(monkeypatch) -> tuple[list[dict], list]:
    """Every epoch's logged metrics, and the split of every PoseDataset fine-tuning opens."""
    epochs, splits = [], []
    monkeypatch.setattr(engine_loop, "log_epoch", lambda live, metrics: epochs.append(dict(metrics)))
    original = finetune_module.PoseDataset.__init__

    def spy(self, path, settings, mode="eval", split=None, *args, **kwargs):
        splits.append(split)
        original(self, path, settings, mode, split, *args, **kwargs)

    monkeypatch.setattr(finetune_module.PoseDataset, "__init__", spy)
    return epochs, splits


def test_best_pt_is_the_best_validation_epoch_and_never_reads_test(ksl_dataset, pretrained, tmp_path, monkeypatch):
    epochs, splits = _record_epochs(monkeypatch)
    _, result, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=2)
    assert "test" not in splits and not [name for m in epochs for name in m if name.startswith("test/")]
    top1 = [m["val/top1"] for m in epochs]
    chosen = int(np.argmax(top1)) + 1  # the first of equally good epochs
    meta = load_checkpoint(best)
    assert meta["selected"] == {"select": "val", "epoch": chosen, "metric": "val/top1", "value": pytest.approx(max(top1))}
    assert meta["epoch"] == chosen and result.selected == meta["selected"]


def test_select_val_without_a_validation_split_fails_before_training(ksl_no_val, pretrained, tmp_path):
    with pytest.raises(SlrpipeError, match="has no validation split, which finetune.select: val needs"):
        _finetune(ksl_no_val, pretrained, tmp_path, epochs=1)  # select: val is the default
    assert not (tmp_path / "finetune").exists()  # no epoch was trained


def test_select_last_takes_the_final_epoch_without_a_validation_split(ksl_no_val, pretrained, tmp_path, monkeypatch):
    epochs, splits = _record_epochs(monkeypatch)
    _, result, best = _finetune(ksl_no_val, pretrained, tmp_path, epochs=2, select="last")
    assert load_checkpoint(best)["selected"] == {"select": "last", "epoch": 2, "metric": None, "value": None}
    assert "test" not in splits and all(name.startswith(("train/", "lr", "samples")) for m in epochs for name in m)


def test_select_test_is_the_authors_protocol_and_says_so(ksl_dataset, pretrained, tmp_path, monkeypatch):
    epochs, _ = _record_epochs(monkeypatch)
    params, _, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=2, select="test")
    assert all({"val/top1", "test/top1"} <= set(m) for m in epochs)  # the test split's metrics are named so
    top1 = [m["test/top1"] for m in epochs]
    chosen = int(np.argmax(top1)) + 1
    assert load_checkpoint(best)["selected"] == {"select": "test", "epoch": chosen, "metric": "test/top1",
                                                 "value": pytest.approx(max(top1))}
    result = run_evaluate(params, best, ksl_dataset[1], tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["selected"]["epoch"] == chosen
    assert metrics["selected"]["test"]["top1"] == pytest.approx(result.metrics["test/per_instance/top1"], abs=1e-6)
    assert "selected on test (authors' protocol, optimistic)" in selection_text(metrics, 2)


@pytest.mark.parametrize(("branches", "parts"), list(itertools.product(("both", "joint", "motion"), ("both", "hand", "trunk"))))
def test_classifier_builds_only_what_it_uses(branches, parts):
    """Every parameter gets a gradient, as DDP (without find_unused_parameters) needs."""
    model = build_classifier(TINY, 4, FinetuneParams(branches=branches, parts=parts))
    model(_view(seed=1)).sum().backward()
    assert not [name for name, p in model.named_parameters() if p.grad is None]


def test_a_one_part_classifier_takes_that_part_of_a_two_part_checkpoint():
    state = {"model": Pretrainer(TINY, PretrainParams(bank_size=16, transfer_top_k=8)).state_dict()}
    model = build_classifier(TINY, 4, FinetuneParams(parts="hand"))
    source = Path("pretrain.pt")
    model.load_pretrained(state, source)
    loaded = model.encoders["joint"].state_dict()
    assert loaded and {part_of(key) for key in loaded} == {"hand"}
    for key, value in loaded.items():
        assert torch.equal(value, state["model"][f"query.joint.encoder.{key}"]), key

    hand_only = {"model": Pretrainer(TINY, PretrainParams(bank_size=16, transfer_top_k=8, parts="hand")).state_dict()}
    with pytest.raises(SlrpipeError, match=f"{source}: its joint encoder has no trunk part: pretrain with parts both or trunk"):
        build_classifier(TINY, 4, FinetuneParams()).load_pretrained(hand_only, source)


@pytest.mark.parametrize(("protocol", "recalibrate", "calls"), [("finetune", True, 2), ("finetune", False, 0), ("linear", True, 0)])
def test_batchnorm_statistics_are_recomputed_on_clean_training_views_before_validation(
        ksl_dataset, pretrained, tmp_path, monkeypatch, protocol, recalibrate, calls):
    seen = []
    original = finetune_module.recalibrate_batchnorm

    def spy(model, batches, forward):
        seen.append(sum(len(batch["label"]) for batch in batches))
        original(model, batches, forward)

    monkeypatch.setattr(finetune_module, "recalibrate_batchnorm", spy)
    _, _, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=2, protocol=protocol, recalibrate_bn=recalibrate)
    train_samples = len(PoseDataset(ksl_dataset[1], tiny_params(ksl_dataset[0], 1).augment, "eval", split="train"))
    assert seen == [train_samples] * calls  # once per epoch, over every training sample
    if calls:  # best.pt carries the recomputed statistics: evaluate and predict use them
        model, _ = load_model(best)
        norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
        assert int(norm.num_batches_tracked) == -(-train_samples // 16)  # the recalibration's batches (batch size 16)


def test_early_stopping_ends_after_patience_epochs_without_a_better_validation_top1(ksl_dataset, pretrained, tmp_path,
                                                                                   monkeypatch):
    """Scripted validation top-1 per epoch: best at epoch 2, then 2 epochs without a better one
    (patience 2) end training after epoch 4 of 6; best.pt is epoch 2, and a resumed run trains
    nothing more."""
    script = iter([0.5, 0.6, 0.6, 0.55, 0.9, 0.9, 0.9])
    monkeypatch.setattr(finetune_module, "split_accuracy", lambda model, dataset, split, device, batch: {"val/top1": next(script)})
    epochs, _ = _record_epochs(monkeypatch)
    params, result, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=6, patience=2)
    assert result.epochs_run == 4 and [m["val/top1"] for m in epochs] == [0.5, 0.6, 0.6, 0.55]
    assert load_checkpoint(best)["selected"] == {"select": "val", "epoch": 2, "metric": "val/top1", "value": 0.6}
    resumed = run_finetune(params, ksl_dataset[1], pretrained, tmp_path / "finetune", None, resume=True)
    assert resumed.epochs_run == 0 and len(epochs) == 4


def test_without_patience_every_epoch_runs(ksl_dataset, pretrained, tmp_path, monkeypatch):
    script = iter([0.9, 0.1, 0.1, 0.1])
    monkeypatch.setattr(finetune_module, "split_accuracy", lambda model, dataset, split, device, batch: {"val/top1": next(script)})
    _, result, best = _finetune(ksl_dataset, pretrained, tmp_path, epochs=4)
    assert result.epochs_run == 4 and load_checkpoint(best)["selected"]["epoch"] == 1


def test_patience_needs_select_val(ksl_dataset):
    with pytest.raises(ParamsError, match="patience stops on validation top-1, so it needs select: val"):
        tiny_params(ksl_dataset[0], 1, finetune={"patience": 2, "select": "last"})
