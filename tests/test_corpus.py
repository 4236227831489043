"""The pretraining corpus (issue 12): which samples of which datasets pretraining reads. Fractions
are seeded and nested, unlabelled recordings never reach a classifier, a target's test samples
never enter pretraining, and fraction 0 fine-tunes from the same random weights as scratch."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from slrpipe.config import parse_params
from slrpipe.data.corpus import assemble_corpus, fraction_rank, member_file, read_corpus, take_fraction, write_corpus
from slrpipe.data.dataset import PoseDataset, corpus_dataset
from slrpipe.errors import ParamsError, SlrpipeError
from slrpipe.h5io import RaggedFile
from tests.conftest import REPO, TINY

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _unlabelled_dataset(tmp: Path) -> Path:
    """Six FYDPASL recordings (data/fydpasl), extracted and preprocessed as `labelled: false`."""
    from slrpipe.data.preprocess import run_preprocess
    from slrpipe.pose.extract import run_extract

    root = tmp / "fydpasl"
    for word in ("hello", "no"):
        for sequence in range(3):
            shutil.copytree(REPO / "data" / "fydpasl" / word / str(sequence), root / word / str(sequence))
    # A target must be labelled (see test_an_unlabelled_target_is_a_params_error), so the one
    # unlabelled dataset is the corpus of a project whose target is another dataset.
    params = parse_params({"datasets": {"asl": {"source": "mp_data", "root": str(root), "labelled": False},
                                        "other": {"source": "mp_data", "root": str(root)}},
                           "pretrain": {"corpus": ["asl"]}, "finetune": {"targets": ["other"]}}, REPO / "params.yaml")
    run_extract(params, tmp / "extract", None, name="asl")
    run_preprocess(params, tmp / "extract" / "keypoints.h5", tmp / "pre")
    return tmp / "pre" / "dataset.h5"


@pytest.fixture(scope="module")
def members(ksl_dataset, tmp_path_factory) -> Path:
    """A preprocess folder with three members: `ksl` (labelled, train/val/test by signer), `asl`
    (unlabelled recordings) and `copy` (ksl's recordings again under other ids, every one a
    training sample: the same recording published in two datasets)."""
    folder = tmp_path_factory.mktemp("members")
    _root, dataset = ksl_dataset
    member_file(folder, "ksl").parent.mkdir()
    shutil.copyfile(dataset, member_file(folder, "ksl"))
    member_file(folder, "asl").parent.mkdir()
    shutil.copyfile(_unlabelled_dataset(tmp_path_factory.mktemp("asl")), member_file(folder, "asl"))
    member_file(folder, "copy").parent.mkdir()
    shutil.copyfile(dataset, member_file(folder, "copy"))
    with h5py.File(member_file(folder, "copy"), "r+") as handle:
        ids = [value.decode() for value in handle["samples/sample_id"][:]]
        handle["samples/sample_id"][...] = np.array([f"copy/{i}" for i in ids], dtype=object)
        handle["samples/split"][...] = np.array(["train"] * len(ids), dtype=object)
    return folder


def corpus_params(corpus=("ksl", "asl"), targets=("ksl",), fraction=1.0, seed=0, splits=("train",)):
    datasets = {"ksl": {"source": "mp_data", "root": "ksl", "pretrain_splits": list(splits)},
                "asl": {"source": "mp_data", "root": "asl", "labelled": False},
                "copy": {"source": "mp_data", "root": "copy"}}
    return parse_params({"datasets": datasets,
                         "pretrain": {"corpus": list(corpus), "corpus_fraction": fraction, "seed": seed},
                         "finetune": {"targets": list(targets)}}, REPO / "params.yaml")


def _column(path: Path, name: str) -> list:
    with RaggedFile(path) as data:
        return list(data.column(name))


def chosen(corpus, member: str) -> set[str]:
    return set(corpus.ids(member))


# ---- fractions ------------------------------------------------------------------------------


def test_fractions_are_nested_seeded_and_count_each_member(members):
    ksl_train = [i for i, s in zip(_column(member_file(members, "ksl"), "sample_id"),
                                   _column(member_file(members, "ksl"), "split")) if s == "train"]
    asl_all = _column(member_file(members, "asl"), "sample_id")
    assert len(ksl_train) > 20 and len(asl_all) == 6
    previous = {"ksl": set(), "asl": set()}
    for fraction in FRACTIONS:
        corpus = assemble_corpus(corpus_params(fraction=fraction), members)
        for member, pool in (("ksl", ksl_train), ("asl", asl_all)):
            ids = chosen(corpus, member)
            # round(fraction x n) of each member, all from its eligible samples
            assert len(ids) == int(fraction * len(pool) + 0.5), (member, fraction)
            assert ids <= set(pool)
            assert previous[member] <= ids, (member, fraction)  # nested: a larger fraction keeps the smaller's
            previous[member] = ids
            assert corpus.summary["members"][member]["chosen"] == len(ids)
        assert corpus.summary["fraction"] == fraction and corpus.summary["samples"] == len(corpus.samples)
        assert corpus.summary["unlabelled"] == len(chosen(corpus, "asl"))
    assert previous["ksl"] == set(ksl_train) and previous["asl"] == set(asl_all)  # 1.0 is everything

    half = assemble_corpus(corpus_params(fraction=0.5), members)
    assert assemble_corpus(corpus_params(fraction=0.5), members).samples == half.samples  # seeded: same again
    other_seed = assemble_corpus(corpus_params(fraction=0.5, seed=1), members)
    assert chosen(other_seed, "ksl") != chosen(half, "ksl")
    assert len(chosen(other_seed, "ksl")) == len(chosen(half, "ksl"))


def test_a_samples_choice_depends_on_its_own_rank_only():
    """Adding samples to a member never changes whether another sample is chosen at a fraction
    beyond what the count itself moves: the chosen are the lowest-ranked by a seeded hash."""
    from slrpipe.data.corpus import CorpusSample

    samples = [CorpusSample("d", f"s{i}", "train", True, "") for i in range(40)]
    taken = take_fraction(samples, 0.5, seed=7)
    ranks = sorted(fraction_rank(7, "d", s.sample_id) for s in samples)
    assert {fraction_rank(7, "d", s.sample_id) for s in taken} == set(ranks[:20])
    assert [s.sample_id for s in taken] == sorted(s.sample_id for s in taken)
    assert take_fraction(samples, 0.0, 7) == [] and len(take_fraction(samples, 1.0, 7)) == 40


def test_corpus_files_round_trip(members, tmp_path):
    corpus = assemble_corpus(corpus_params(fraction=0.5), members)
    write_corpus(corpus, tmp_path)
    again = read_corpus(tmp_path, members)
    assert again.samples == corpus.samples and again.digest() == corpus.digest()
    assert again.monitor == member_file(members, "ksl")  # the (labelled) target's train vs val


# ---- unlabelled recordings ---------------------------------------------------------------


def test_unlabelled_recordings_are_training_samples_without_labels(members):
    path = member_file(members, "asl")
    assert set(_column(path, "split")) == {"train"} and set(_column(path, "label")) == {-1}
    with RaggedFile(path) as data:
        assert data.attr("glosses") == [] and not data.attr("labelled", True)
    corpus = assemble_corpus(corpus_params(), members)
    pretraining = corpus_dataset(corpus.members(), corpus_params().augment, "pretrain", seed=0)
    assert len(pretraining) == len(corpus.samples) and {s.dataset for s in corpus.samples} == {"ksl", "asl"}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_unlabelled_recordings_never_reach_a_classifier(members, mode):
    """Fine-tuning (train), evaluation and the kNN monitor (eval) refuse them, whatever split."""
    for split in (None, "train", "val", "test"):
        with pytest.raises(SlrpipeError, match="unlabelled recordings"):
            PoseDataset(member_file(members, "asl"), corpus_params().augment, mode, split=split)


def test_finetune_evaluate_and_the_knn_monitor_refuse_unlabelled_recordings(members, tmp_path):
    from slrpipe.finetune.train import run_finetune
    from slrpipe.pretrain.model import Pretrainer
    from slrpipe.pretrain.train import knn_monitor

    params = corpus_params()
    path = member_file(members, "asl")
    with pytest.raises(SlrpipeError, match="unlabelled recordings"):
        run_finetune(params.model_copy(update={"finetune": params.finetune.model_copy(update={"device": "cpu"})}),
                     path, tmp_path / "none.pt", tmp_path / "ft", None, name="ksl")
    with pytest.raises(SlrpipeError, match="unlabelled recordings"):
        knn_monitor(Pretrainer(TINY, params.pretrain), params, path, torch.device("cpu"))
    # The corpus never names an unlabelled dataset as the monitor's.
    assert assemble_corpus(params, members).monitor == member_file(members, "ksl")


def test_an_unlabelled_target_is_a_params_error():
    with pytest.raises(ParamsError, match="finetune.targets: 'asl' has datasets.asl.labelled: false"):
        corpus_params(targets=("ksl", "asl"))


# ---- test leakage ------------------------------------------------------------------------


def _test_arrays(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    with RaggedFile(path) as data:
        splits, ids = data.column("split"), data.column("sample_id")
        return [(ids[i], data.frames("coords", i), data.frames("mask", i)) for i in range(len(ids)) if splits[i] == "test"]


@pytest.mark.parametrize("splits", [("train",), ("train", "val")])
def test_no_sample_of_a_targets_test_split_enters_pretraining(members, splits):
    """Neither by id (the target's own test split) nor by content (the same recording in
    another member, here every ksl recording again as `copy`'s training samples)."""
    params = corpus_params(corpus=("ksl", "asl", "copy"), splits=splits)
    corpus = assemble_corpus(params, members)
    tests = _test_arrays(member_file(members, "ksl"))
    assert len(tests) > 5
    test_ids = {sample_id for sample_id, _, _ in tests}
    assert not chosen(corpus, "ksl") & test_ids
    assert {s.split for s in corpus.samples if s.dataset == "ksl"} == set(splits)
    # Content, compared on the stored arrays themselves (not through the corpus' digest).
    for member in ("ksl", "copy", "asl"):
        with RaggedFile(member_file(members, member)) as data:
            index = {sample_id: i for i, sample_id in enumerate(data.column("sample_id"))}
            for sample_id in corpus.ids(member):
                coords, mask = data.frames("coords", index[sample_id]), data.frames("mask", index[sample_id])
                for test_id, test_coords, test_mask in tests:
                    same = coords.shape == test_coords.shape and np.array_equal(coords, test_coords) and np.array_equal(mask, test_mask)
                    assert not same, f"{member}:{sample_id} is the test sample ksl:{test_id}"
    copy = corpus.summary["members"]["copy"]
    assert copy["test_duplicates"] == len(tests) and copy["chosen"] == copy["eligible"] - len(tests) > 0


# ---- fraction 0 --------------------------------------------------------------------------


def _initial_weights(monkeypatch, params, dataset: Path, pretrained: Path, out: Path) -> dict[str, torch.Tensor]:
    """The classifier's weights when fine-tuning starts (the training loop itself is skipped)."""
    from slrpipe.finetune import train

    seen: dict[str, torch.Tensor] = {}

    def no_training(model, *args, **kwargs):
        seen.update({key: value.detach().clone() for key, value in model.state_dict().items()})
        return 0, {}

    monkeypatch.setattr(train, "fit", no_training)
    train.run_finetune(params, dataset, pretrained, out, None, resume=False)
    return seen


def test_fraction_zero_fine_tunes_from_the_same_random_weights_as_scratch(ksl_dataset, tmp_path, monkeypatch):
    from slrpipe.pretrain.train import run_pretrain
    from slrpipe.engine.checkpoints import load_checkpoint
    from tests.conftest import tiny_params

    root, dataset = ksl_dataset
    untrained = tiny_params(root, 1, corpus_fraction=0.0)
    result = run_pretrain(untrained, dataset, tmp_path / "zero", tmp_path / "live", resume=True)
    assert result.epochs_run == 0 and load_checkpoint(result.checkpoint, output=True).get("untrained") is True
    assert (tmp_path / "live" / "metrics.json").is_file()  # the stage's outputs exist, empty

    def with_protocol(params, protocol):
        return params.model_copy(update={"finetune": params.finetune.model_copy(update={"protocol": protocol})})

    from_zero = _initial_weights(monkeypatch, with_protocol(untrained, "finetune"), dataset, result.checkpoint, tmp_path / "a")
    scratch = _initial_weights(monkeypatch, with_protocol(untrained, "scratch"), dataset, tmp_path / "absent.pt", tmp_path / "b")
    assert from_zero.keys() == scratch.keys()
    assert all(torch.equal(from_zero[key], scratch[key]) for key in scratch)

    # A real pretraining checkpoint does change them (the comparison above can fail).
    trained = tiny_params(root, 1)
    checkpoint = run_pretrain(trained, dataset, tmp_path / "one", None, resume=True).checkpoint
    pretrained = _initial_weights(monkeypatch, with_protocol(trained, "finetune"), dataset, checkpoint, tmp_path / "c")
    assert not all(torch.equal(pretrained[key], scratch[key]) for key in scratch)
