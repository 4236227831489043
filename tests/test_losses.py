"""Pretraining losses against small examples worked out by hand (scalar math, no torch)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from slrpipe.pretrain import losses
from slrpipe.pretrain.losses import info_nce, knowledge_transfer, neighbour_consistency, part_consistency, total_loss


def t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# Scalar reference arithmetic on plain lists: one entry at a time, nothing vectorized.
def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(x) for x in logits]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# ---------------------------------------------------------------- info_nce (Eq. 2)


def test_info_nce_hand_computed() -> None:
    # Sample 1: q=(1,0), positive k=(0.6,0.8) -> 0.6; negatives (0,1) -> 0 and (-1,0) -> -1.
    # Sample 2: q=(0,1), positive k=(0,1) -> 1; negatives -> 1 and 0.
    tau = 0.5
    first = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0 / tau) + math.exp(-1 / tau)))
    second = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(1 / tau) + math.exp(0 / tau)))
    loss = info_nce(t([[1, 0], [0, 1]]), t([[0.6, 0.8], [0, 1]]), t([[0, 1], [-1, 0]]), tau)
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-12)


def test_info_nce_better_positive_lowers_the_loss() -> None:
    bank = t([[0, 1], [-1, 0]])
    worse = info_nce(t([[1, 0]]), t([[0, 1]]), bank, 0.07)
    better = info_nce(t([[1, 0]]), t([[1, 0]]), bank, 0.07)
    assert better.item() < worse.item()


# ---------------------------------------------------------------- part_consistency (Eq. 3)

Q_HAND, Q_TRUNK = [1.0, 0.0], [0.0, 1.0]
K_HAND, K_TRUNK = [0.6, 0.8], [0.8, 0.6]


def test_part_consistency_hand_computed() -> None:
    tau = 0.5
    # KL(p(k_hand) || p(q_trunk)) with p over the two embedding dimensions, written out.
    p = [
        math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau)),
        math.exp(0.8 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau)),
    ]
    q = [1 / (1 + math.exp(1 / tau)), math.exp(1 / tau) / (1 + math.exp(1 / tau))]
    hand_to_trunk = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1])
    # KL(p(k_trunk) || p(q_hand)): both are the mirror images of the above.
    trunk_to_hand = p[1] * math.log(p[1] / q[1]) + p[0] * math.log(p[0] / q[0])
    loss = part_consistency(t([Q_HAND]), t([Q_TRUNK]), t([K_HAND]), t([K_TRUNK]), tau)
    assert loss.item() == pytest.approx(hand_to_trunk + trunk_to_hand, abs=1e-12)


def test_part_consistency_batchmean() -> None:
    # Two samples: the per-sample KL sums over dimensions, the batch is averaged.
    tau = 0.1
    same = [0.0, 1.0]
    first = kl(softmax([x / tau for x in K_HAND]), softmax([x / tau for x in Q_TRUNK])) + kl(
        softmax([x / tau for x in K_TRUNK]), softmax([x / tau for x in Q_HAND])
    )
    loss = part_consistency(t([Q_HAND, same]), t([Q_TRUNK, same]), t([K_HAND, same]), t([K_TRUNK, same]), tau)
    assert loss.item() == pytest.approx((first + 0.0) / 2, abs=1e-12)


def test_part_consistency_is_asymmetric_in_query_and_key() -> None:
    tau = 0.5
    forward = part_consistency(t([Q_HAND]), t([Q_TRUNK]), t([K_HAND]), t([K_TRUNK]), tau)
    swapped = part_consistency(t([K_HAND]), t([K_TRUNK]), t([Q_HAND]), t([Q_TRUNK]), tau)
    expected_swapped = kl(softmax([x / tau for x in Q_HAND]), softmax([x / tau for x in K_TRUNK])) + kl(
        softmax([x / tau for x in Q_TRUNK]), softmax([x / tau for x in K_HAND])
    )
    assert swapped.item() == pytest.approx(expected_swapped, abs=1e-12)
    assert abs(forward.item() - swapped.item()) > 1e-3


def test_part_consistency_zero_when_distributions_match() -> None:
    # q_trunk == k_hand and q_hand == k_trunk: both KL terms vanish.
    loss = part_consistency(t([K_TRUNK]), t([K_HAND]), t([K_HAND]), t([K_TRUNK]), 0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- knowledge_transfer (Eq. 5-6)

# Teacher (modality A): key (1,0) -> similarities 1, 0, -1, 0.6 -> top-2 indices {0, 3}.
TEACHER_KEY = [1.0, 0.0]
TEACHER_BANK = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]
# Student (modality B): query (0,1) -> similarities 0.8, 0, 1, 0.2. Its OWN top-2 would be
# {2, 0}; on the teacher's indices {0, 3} it sees 0.8 and 0.2.
STUDENT_QUERY = [0.0, 1.0]
STUDENT_BANK = [[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.96**0.5, 0.2]]


def kt_expected(teacher_sims: list[float], student_sims: list[float], tau_t: float, tau_s: float) -> float:
    return kl(softmax([s / tau_t for s in teacher_sims]), softmax([s / tau_s for s in student_sims]))


def test_knowledge_transfer_uses_teachers_top_k_indices() -> None:
    tau_t, tau_s = 0.05, 0.1
    loss = knowledge_transfer(t([TEACHER_KEY]), t(TEACHER_BANK), t([STUDENT_QUERY]), t(STUDENT_BANK), 2, tau_t, tau_s)
    on_teacher_indices = kt_expected([1.0, 0.6], [0.8, 0.2], tau_t, tau_s)  # indices 0, 3
    on_student_indices = kt_expected([1.0, 0.6], [1.0, 0.8], tau_t, tau_s)  # what a wrong "own top-k" would give
    assert loss.item() == pytest.approx(on_teacher_indices, abs=1e-12)
    assert abs(on_teacher_indices - on_student_indices) > 1e-3


def test_knowledge_transfer_ignores_entries_outside_top_k() -> None:
    tau_t, tau_s = 0.05, 0.1
    reference = knowledge_transfer(t([TEACHER_KEY]), t(TEACHER_BANK), t([STUDENT_QUERY]), t(STUDENT_BANK), 2, tau_t, tau_s)
    # Rows 1 and 2 changed in both banks; the teacher similarities (0, 0.5) stay below the top-2 (1, 0.6).
    teacher_bank = [TEACHER_BANK[0], [0.0, -1.0], [0.5, -(0.75**0.5)], TEACHER_BANK[3]]
    student_bank = [STUDENT_BANK[0], [0.0, 1.0], [-0.6, 0.8], STUDENT_BANK[3]]
    changed = knowledge_transfer(t([TEACHER_KEY]), t(teacher_bank), t([STUDENT_QUERY]), t(student_bank), 2, tau_t, tau_s)
    assert changed.item() == pytest.approx(reference.item(), abs=1e-12)


def test_knowledge_transfer_per_sample_indices_and_batchmean() -> None:
    tau_t, tau_s = 0.05, 0.1
    # Second sample: teacher key (0,1) -> similarities 0, 1, 0, 0.8 -> top-2 {1, 3};
    # student query (1,0) on rows 1, 3 of the student bank -> 1.0, sqrt(0.96).
    first = kt_expected([1.0, 0.6], [0.8, 0.2], tau_t, tau_s)
    second = kt_expected([1.0, 0.8], [1.0, 0.96**0.5], tau_t, tau_s)
    loss = knowledge_transfer(
        t([TEACHER_KEY, [0, 1]]), t(TEACHER_BANK), t([STUDENT_QUERY, [1, 0]]), t(STUDENT_BANK), 2, tau_t, tau_s
    )
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-12)


def test_knowledge_transfer_temperature_asymmetry() -> None:
    # Teacher and student see the same similarities (1, 0.6); only the temperatures differ.
    bank = t(TEACHER_BANK)
    key = t([TEACHER_KEY])
    sharp = [
        math.exp(1 / 0.05) / (math.exp(1 / 0.05) + math.exp(0.6 / 0.05)),
        math.exp(0.6 / 0.05) / (math.exp(1 / 0.05) + math.exp(0.6 / 0.05)),
    ]
    soft = [
        math.exp(1 / 0.1) / (math.exp(1 / 0.1) + math.exp(0.6 / 0.1)),
        math.exp(0.6 / 0.1) / (math.exp(1 / 0.1) + math.exp(0.6 / 0.1)),
    ]
    expected = sharp[0] * math.log(sharp[0] / soft[0]) + sharp[1] * math.log(sharp[1] / soft[1])
    loss = knowledge_transfer(key, bank, key, bank, 2, 0.05, 0.1)
    assert expected > 0.01
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert knowledge_transfer(key, bank, key, bank, 2, 0.1, 0.1).item() == pytest.approx(0.0, abs=1e-12)


def test_knowledge_transfer_k_larger_than_bank() -> None:
    with pytest.raises(ValueError, match="bank size"):
        knowledge_transfer(t([TEACHER_KEY]), t(TEACHER_BANK), t([STUDENT_QUERY]), t(STUDENT_BANK), 5, 0.05, 0.1)


def test_knowledge_transfer_banks_must_align() -> None:
    with pytest.raises(ValueError, match="same number of entries"):
        knowledge_transfer(t([TEACHER_KEY]), t(TEACHER_BANK), t([STUDENT_QUERY]), t(STUDENT_BANK[:3]), 2, 0.05, 0.1)


# ---------------------------------------------------------------- neighbour_consistency (official code)


def test_neighbour_consistency_hand_computed() -> None:
    tau_t, tau_s = 0.05, 0.1
    hand_bank = [[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]]
    trunk_bank = [[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]]
    k_hand, k_trunk = [1.0, 0.0], [0.0, 1.0]
    q_hand, q_trunk = [0.8, 0.6], [0.6, 0.8]
    # Hand key vs hand bank: 1, 0, 0.8 -> top-2 {0, 2}; trunk query on trunk rows 0, 2: 1.0, -0.8.
    hand_to_trunk = kt_expected([1.0, 0.8], [1.0, -0.8], tau_t, tau_s)
    # Trunk key vs trunk bank: 0.8, 0, -1 -> top-2 {0, 1}; hand query on hand rows 0, 1: 0.8, 0.6.
    trunk_to_hand = kt_expected([0.8, 0.0], [0.8, 0.6], tau_t, tau_s)
    loss = neighbour_consistency(
        t([q_hand]), t([q_trunk]), t([k_hand]), t([k_trunk]), t(hand_bank), t(trunk_bank), 2, tau_t, tau_s
    )
    assert loss.item() == pytest.approx(hand_to_trunk + trunk_to_hand, abs=1e-12)


# ---------------------------------------------------------------- gradients


def test_gradients_reach_queries_only() -> None:
    torch.manual_seed(0)

    def unit(*shape: int, grad: bool = True) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1).requires_grad_(grad)

    q_hand, q_trunk, k_hand, k_trunk = unit(4, 8), unit(4, 8), unit(4, 8), unit(4, 8)
    hand_bank, trunk_bank = unit(16, 8), unit(16, 8)
    losses = [
        info_nce(q_hand, k_hand, hand_bank, 0.07),
        part_consistency(q_hand, q_trunk, k_hand, k_trunk, 0.1),
        knowledge_transfer(k_hand, hand_bank, q_trunk, trunk_bank, 5, 0.05, 0.1),
        neighbour_consistency(q_hand, q_trunk, k_hand, k_trunk, hand_bank, trunk_bank, 5, 0.05, 0.1),
    ]
    for loss in losses:
        for tensor in (q_hand, q_trunk, k_hand, k_trunk, hand_bank, trunk_bank):
            tensor.grad = None
        loss.backward()
        assert k_hand.grad is None and k_trunk.grad is None
        assert hand_bank.grad is None and trunk_bank.grad is None
        assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in (q_hand, q_trunk))


# ---------------------------------------------------------------- total_loss (Eq. 8)


def test_total_loss_weights_and_switched_off_branch() -> None:
    one, two, four, eight, sixteen = (torch.tensor(float(v)) for v in (1, 2, 4, 8, 16))
    everything = total_loss(one, two, four, eight, sixteen, lambda_joint=0.5, lambda_motion=0.25)
    assert everything.item() == pytest.approx(0.5 * (1 + 2) + 0.25 * (4 + 8) + 16)
    # Official code: every term with weight 1.
    assert total_loss(one, two, four, eight, sixteen, lambda_joint=1, lambda_motion=1).item() == pytest.approx(31)
    # Joint-only pretraining (Tab. VII): no motion branch, no knowledge transfer.
    joint_only = total_loss(one, two, None, None, None, lambda_joint=0.5, lambda_motion=0.5)
    assert joint_only.item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least one"):
        total_loss(None, None, None, None, None, lambda_joint=0.5, lambda_motion=0.5)


# ---------------------------------------------------------------- paper-sized run


def test_paper_sized_batch_runs() -> None:
    # B=64, D=128, N=16384, K=8192: only run it (and print the time with -s), no timing assertion.
    torch.manual_seed(0)
    b, d, n, k = 64, 128, 16384, 8192

    def unit(*shape: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)

    q_hand, q_trunk, k_hand, k_trunk = (unit(b, d).requires_grad_(i < 2) for i in range(4))
    hand_bank, trunk_bank = unit(n, d), unit(n, d)
    start = time.perf_counter()
    cl = info_nce(q_hand, k_hand, hand_bank, 0.07) + info_nce(q_trunk, k_trunk, trunk_bank, 0.07)
    con = part_consistency(q_hand, q_trunk, k_hand, k_trunk, 0.1)
    nbr = neighbour_consistency(q_hand, q_trunk, k_hand, k_trunk, hand_bank, trunk_bank, k, 0.05, 0.1)
    kt = knowledge_transfer(k_hand + k_trunk, hand_bank + trunk_bank, q_hand + q_trunk, hand_bank + trunk_bank, k, 0.05, 0.1)
    loss = total_loss(cl, con + nbr, None, None, kt, lambda_joint=0.5, lambda_motion=0.5)
    loss.backward()
    print(f"paper-sized losses forward + backward: {time.perf_counter() - start:.3f} s")
    assert torch.isfinite(loss)


def test_embedding_stats_hand_computed():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    key = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    bank = torch.tensor([[0.0, 1.0]])
    stats = losses.embedding_stats(query, key, bank)
    # q.k = 1 and 0; q.bank = 0 and 1; ||q - k||^2 = 0 and 2; the one pair of queries is 2 apart
    # (squared), so uniformity = log exp(-2 * 2) = -4.
    assert stats["positive"].item() == pytest.approx(0.5)
    assert stats["negative"].item() == pytest.approx(0.5)
    assert stats["alignment"].item() == pytest.approx(1.0)
    assert stats["uniformity"].item() == pytest.approx(-4.0)


def test_embedding_stats_see_collapse():
    same = torch.nn.functional.normalize(torch.ones(4, 3), dim=1)
    stats = losses.embedding_stats(same, same, same)
    assert stats["uniformity"].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["positive"].item() == pytest.approx(stats["negative"].item())
