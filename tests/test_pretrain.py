"""The pretraining method: queues, momentum, gradient flow, ablation switches, resume, and a real run."""

import itertools
import logging

import pytest
import torch

from slrpipe.config import PretrainParams
from slrpipe.model import part_of
from slrpipe.pretrain.model import Pretrainer
from slrpipe.pretrain.queue import KeyQueue
from tests.conftest import TINY, tiny_params


def _view(batch=4, frames=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"right_hand": 21, "left_hand": 21, "trunk": 7}
    view = {kind: {part: torch.rand(batch, frames, joints, 2, generator=generator) for part, joints in shapes.items()}
            for kind in ("joint", "motion")}
    view["mask"] = {part: torch.rand(batch, frames, joints, generator=generator) > 0.2 for part, joints in shapes.items()}
    return view


def _settings(**changes):
    return PretrainParams(bank_size=16, part_bank_size=8, transfer_top_k=4, neighbour_top_k=4, **changes)


def test_queue_wraps_around_and_normalizes():
    queue = KeyQueue(5, 2)
    queue.enqueue(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    assert int(queue.pointer) == 3
    queue.enqueue(torch.tensor([[0.0, -1.0], [-2.0, 0.0], [5.0, 12.0]]))
    assert int(queue.pointer) == 1
    expected_first = torch.tensor([5.0, 12.0]) / 13  # the sixth key overwrote the first
    torch.testing.assert_close(queue.keys[0], expected_first)
    torch.testing.assert_close(queue.keys[1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(queue.keys[3], torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(queue.keys[4], torch.tensor([-1.0, 0.0]))
    assert not queue.keys.requires_grad
    assert set(queue.state_dict()) == {"keys", "pointer"}  # saved in checkpoints


def test_momentum_update_formula():
    model = Pretrainer(TINY, _settings(momentum=0.9))
    query = next(model.query.parameters())
    key = next(model.key.parameters())
    with torch.no_grad():
        query.fill_(1.0)
        key.fill_(3.0)
    model.momentum_update()
    torch.testing.assert_close(key, torch.full_like(key, 0.9 * 3.0 + 0.1 * 1.0))


def test_gradients_reach_query_encoders_only():
    torch.manual_seed(0)
    model = Pretrainer(TINY, _settings())
    banks_before = {name: buffer.clone() for name, buffer in model.banks.named_buffers()}
    terms, _ = model(_view(seed=1), _view(seed=2))
    key_before = [p.detach().clone() for p in model.key.parameters()]
    banks_after_forward = {name: buffer.clone() for name, buffer in model.banks.named_buffers()}
    terms["total"].backward()
    assert all(p.grad is None for p in model.key.parameters())
    assert all(not p.requires_grad for p in model.key.parameters())
    assert all(torch.equal(a, b) for a, b in zip(key_before, model.key.parameters()))
    assert all(torch.equal(banks_after_forward[n], b) for n, b in model.banks.named_buffers())  # backward left banks alone
    assert any(not torch.equal(banks_before[n], b) for n, b in model.banks.named_buffers())  # the forward enqueued
    grads = [p.grad for p in model.query.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {"contrast_joint", "consistency_joint", "contrast_motion", "consistency_motion",
              "transfer_joint_to_motion", "transfer_motion_to_joint"}),
        ({"use_consistency": False}, {"contrast_joint", "contrast_motion", "transfer_joint_to_motion", "transfer_motion_to_joint"}),
        ({"use_knowledge_transfer": False}, {"contrast_joint", "consistency_joint", "contrast_motion", "consistency_motion"}),
        ({"transfer_motion_to_joint": False}, {"contrast_joint", "consistency_joint", "contrast_motion", "consistency_motion",
                                               "transfer_joint_to_motion"}),
        ({"branches": "joint"}, {"contrast_joint", "consistency_joint"}),
        ({"branches": "motion", "parts": "hand"}, {"contrast_motion"}),
        ({"consistency_form": "neighbour", "transfer_anchors": "global"},
         {"contrast_joint", "consistency_joint", "contrast_motion", "consistency_motion",
          "transfer_joint_to_motion", "transfer_motion_to_joint"}),
    ],
)
def test_ablation_switches_remove_terms(changes, expected):
    torch.manual_seed(0)
    model = Pretrainer(TINY, _settings(**changes))
    terms, _ = model(_view(seed=1), _view(seed=2))
    assert set(terms) - {"total"} == expected
    s = model.settings
    weight = {"joint": s.lambda_joint, "motion": s.lambda_motion}
    by_hand = sum(value * (1.0 if name.startswith("transfer") else weight[name.split("_")[1]])
                  for name, value in terms.items() if name != "total")
    torch.testing.assert_close(terms["total"], by_hand)


@pytest.mark.parametrize(("branches", "parts", "anchors"),
                         list(itertools.product(("both", "joint", "motion"), ("both", "hand", "trunk"), ("part_sum", "global"))))
def test_every_trainable_parameter_gets_a_gradient(branches, parts, anchors):
    """What DDP (without find_unused_parameters) needs: no parameter is built that the loss does not use."""
    torch.manual_seed(0)
    for terms in ({}, {"use_consistency": False, "use_knowledge_transfer": False}):
        model = Pretrainer(TINY, _settings(branches=branches, parts=parts, transfer_anchors=anchors, **terms))
        model(_view(seed=1), _view(seed=2))[0]["total"].backward()
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(name.startswith("query.") for name in trainable)  # the key encoders stay out of DDP
        assert not [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_parts_switch_changes_banks_and_features():
    model = Pretrainer(TINY, _settings(parts="trunk", branches="joint"))
    assert {m: set(b) for m, b in model.banks.items()} == {"joint": {"trunk"}}  # only the used part has a bank, an encoder and a head
    assert set(model.query["joint"].heads) == {"trunk"}
    assert {part_of(name) for name, _ in model.query["joint"].encoder.named_parameters()} == {"trunk"}
    authors = Pretrainer(TINY, _settings(transfer_anchors="global"))
    assert authors.banks["joint"]["global"].size == 16 and authors.banks["joint"]["hand"].size == 8
    assert model.features(_view()).shape == (4, TINY.width)


def test_resume_gives_the_same_result_as_one_run(ksl_dataset, tmp_path):
    from slrpipe.engine.checkpoints import load_checkpoint
    from slrpipe.pretrain.train import run_pretrain

    root, dataset = ksl_dataset
    params = tiny_params(root, 3, knn_every=10)
    run_pretrain(params, dataset, tmp_path / "whole", None, resume=False)
    run_pretrain(params, dataset, tmp_path / "split", None, resume=False, epochs=1)  # "interrupted" after epoch 1
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1
    result = run_pretrain(params, dataset, tmp_path / "split", None, resume=True)
    assert result.epochs_run == 2
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert whole["epoch"] == split["epoch"] == 3
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, split["model"][name]), name


def test_resume_with_other_settings_starts_over(ksl_dataset, tmp_path):
    from slrpipe.pretrain.train import run_pretrain

    root, dataset = ksl_dataset
    run_pretrain(tiny_params(root, 1, knn_every=10), dataset, tmp_path, None, resume=False)
    result = run_pretrain(tiny_params(root, 1, knn_every=10, lr=0.02), dataset, tmp_path, None, resume=True)
    assert result.epochs_run == 1


def test_resume_after_a_code_change_starts_over(ksl_dataset, tmp_path, monkeypatch):
    from slrpipe.pretrain import train

    root, dataset = ksl_dataset
    params = tiny_params(root, 1, knn_every=10)
    train.run_pretrain(params, dataset, tmp_path, None, resume=False)
    assert train.run_pretrain(params, dataset, tmp_path, None, resume=True).epochs_run == 0  # finished: nothing to do
    monkeypatch.setattr(train, "CODE", train.CODE + ("slrpipe.engine.scoring",))  # as if the code had changed
    assert train.run_pretrain(params, dataset, tmp_path, None, resume=True).epochs_run == 1


def test_real_run_knn_accuracy_rises_well_above_chance(ksl_dataset, tmp_path):
    """4 real KSL signs (chance 25 %) from unseen signers: kNN accuracy of the pretrained encoders.

    (Randomly initialised encoders of this size score 0.38-0.53 here; 5 epochs of pretraining
    reached 0.88-0.93 when this test was written.)
    """
    from slrpipe.pretrain.train import run_pretrain

    root, dataset = ksl_dataset
    params = tiny_params(root, 5, knn_every=5, lr_steps=[])
    result = run_pretrain(params, dataset, tmp_path, tmp_path / "live", resume=False)
    assert result.last_metrics["val/knn_top1"] >= 0.25 + 0.4
    assert (tmp_path / "live" / "metrics.json").is_file()
    # Each contrasted embedding's diagnostics are logged, named by the split they describe.
    for modality in ("joint", "motion"):
        assert f"train/loss/contrast_{modality}" in result.last_metrics
        for part in ("hand", "trunk"):
            positive, negative = (result.last_metrics[f"train/{s}_{modality}_{part}"] for s in ("positive", "negative"))
            assert -1 <= negative <= 1 and -1 <= positive <= 1
            assert 0 <= result.last_metrics[f"train/alignment_{modality}_{part}"] <= 4
            assert result.last_metrics[f"train/uniformity_{modality}_{part}"] <= 0
            assert (tmp_path / "live" / "plots" / "metrics" / "train" / f"uniformity_{modality}_{part}.tsv").is_file()


def test_knn_monitor_without_a_validation_split_records_nothing_and_never_reads_test(ksl_no_val, tmp_path, monkeypatch,
                                                                                    caplog):
    from slrpipe.pretrain import train

    read = []
    original = train.PoseDataset.__init__

    def spy(self, path, settings, mode="eval", split=None, *args, **kwargs):
        read.append(split)
        original(self, path, settings, mode, split, *args, **kwargs)

    monkeypatch.setattr(train.PoseDataset, "__init__", spy)
    root, dataset = ksl_no_val
    with caplog.at_level(logging.INFO, logger="slrpipe.pretrain.train"):
        result = train.run_pretrain(tiny_params(root, 2, knn_every=1), dataset, tmp_path, tmp_path / "live", resume=False)
    assert "test" not in read
    assert not [name for name in result.last_metrics if "knn" in name]
    assert "knn" not in (tmp_path / "live" / "metrics.json").read_text()
    said = [r.getMessage() for r in caplog.records if "kNN monitor" in r.getMessage()]
    assert len(said) == 1 and "no validation split" in said[0]  # once per run, not once per monitored epoch


def test_enqueue_keys_puts_the_key_encoders_embeddings_into_every_bank():
    torch.manual_seed(0)
    model = Pretrainer(TINY, PretrainParams(bank_size=4, transfer_top_k=2))
    view = _view(batch=4, seed=3)
    model.enqueue_keys(view)
    with torch.no_grad():
        expected = {m: model.key[m](view[m], view["mask"]) for m in model.modalities}
    for m in model.modalities:
        for part in ("hand", "trunk"):
            torch.testing.assert_close(model.banks[m][part].keys, expected[m][part])


@pytest.mark.parametrize("bank_init", ["keys", "random"])
def test_bank_init_fills_the_banks_before_the_first_step(ksl_dataset, tmp_path, monkeypatch, bank_init):
    from slrpipe.pretrain import train

    calls = []
    monkeypatch.setattr(Pretrainer, "enqueue_keys", lambda self, view: calls.append(len(view["mask"]["trunk"])))
    root, dataset = ksl_dataset
    # Bank 40, batch 16: three batches of real keys fill it before training starts.
    train.run_pretrain(tiny_params(root, 1, knn_every=10, bank_size=40, bank_init=bank_init), dataset, tmp_path, None,
                       resume=False)
    assert calls == ([16, 16, 16] if bank_init == "keys" else [])


@pytest.mark.parametrize("recalibrate", [True, False])
def test_knn_monitor_recalibrates_batchnorm_and_puts_the_training_statistics_back(ksl_dataset, monkeypatch, recalibrate):
    """The monitor embeds with BatchNorm statistics of clean training views (knn_recalibrate_bn);
    afterwards the model that trains on has its own running averages again."""
    from slrpipe.pretrain import train

    root, dataset = ksl_dataset
    params = tiny_params(root, 1, knn_recalibrate_bn=recalibrate)
    model = Pretrainer(params.model.chosen, params.pretrain)
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    during = []  # each BatchNorm's batch count right after recalibration, as the embedding sees it
    original = train.recalibrate_batchnorm

    def spy(module, batches, forward):
        original(module, batches, forward)
        during.append([int(m.num_batches_tracked) for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)])

    monkeypatch.setattr(train, "recalibrate_batchnorm", spy)
    accuracy = train.knn_monitor(model, params, dataset, torch.device("cpu"))
    assert 0 <= accuracy <= 1
    assert all(torch.equal(before[name], buffer) for name, buffer in model.named_buffers())
    if recalibrate:
        assert len(during) == 1 and during[0] and all(count > 0 for count in during[0])
    else:
        assert during == []


def _recording_masks(module, seen, name):
    original = module.forward

    def forward(coords, masks):
        seen.append((name, masks))
        return original(coords, masks)
    module.forward = forward


def test_the_motion_branch_reads_its_own_mask_when_the_view_has_one():
    """augment.motion_source sequence: a view carries the motion's own mask (motion_mask), and
    the motion encoders read it, the joint encoders the joints' mask; without it both share one."""
    from slrpipe.data.augment import MOTION_MASK
    from slrpipe.model.classifier import SignClassifier

    torch.manual_seed(0)
    model = Pretrainer(TINY, _settings())
    classifier = SignClassifier(TINY, 3, ("joint", "motion"), ("hand", "trunk"), "sum")
    seen = []
    for name, branch in [*model.query.items(), *model.key.items()]:
        _recording_masks(branch, seen, name)
    for name, encoder in classifier.encoders.items():
        _recording_masks(encoder, seen, name)
    own = _view(seed=1)
    own[MOTION_MASK] = {part: ~mask for part, mask in own["mask"].items()}
    model(own, own)
    classifier(own)
    assert len(seen) == 6
    for name, masks in seen:
        assert masks is (own[MOTION_MASK] if name == "motion" else own["mask"])
    seen.clear()
    shared = _view(seed=2)
    model(shared, shared)
    assert len(seen) == 4 and all(masks is shared["mask"] for _, masks in seen)


def test_the_losses_run_in_float32_under_bf16_autocast(monkeypatch):
    """Under autocast the encoders run in bfloat16, but every loss sees float32 embeddings with
    autocast off (a bfloat16 cosine / 0.07 would move the logits by up to 0.06)."""
    from slrpipe.pretrain import losses

    seen = []
    original = losses.info_nce

    def spy(query, key, bank, tau):
        seen.append((query.dtype, key.dtype, bank.dtype, torch.is_autocast_enabled("cpu")))
        return original(query, key, bank, tau)

    monkeypatch.setattr(losses, "info_nce", spy)
    torch.manual_seed(0)
    model = Pretrainer(TINY, _settings())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = model(_view(seed=1), _view(seed=2))
    assert seen and all(entry == (torch.float32, torch.float32, torch.float32, False) for entry in seen)
    assert all(value.dtype == torch.float32 for value in terms.values())
    terms["total"].backward()
