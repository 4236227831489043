"""Pretraining losses (METHOD.md section 6; paper Eq. 2-8), as pure functions of tensors.

Conventions shared by every function here:

* B is the batch, D the embedding size, N the number of entries of a memory bank.
* Queries come from the query encoder and carry gradients. Keys (momentum encoder) and
  banks (FIFO queues of past keys) are constants: they are detached inside, so a caller
  may pass tensors that require grad without gradients leaking into them.
* Nothing is normalized here: the caller passes what the equation uses (unit vectors for
  Eq. 2-3; for Eq. 6 the paper's sums f_h + f_tr, which are not unit vectors).
* "KL(p || q)" is summed over the distribution's entries and averaged over the batch
  (PyTorch's reduction="batchmean"), i.e. the mean of the per-sample KL divergence; this is
  also what the authors' code uses. reduction="mean" would instead divide by B * D and make
  the loss scale shrink with the number of entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _kl_batchmean(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """KL(softmax(teacher) || softmax(student)) over the last dim, mean over the batch; the teacher is a constant."""
    # log_target=True keeps the teacher in log space: no log(0) when a teacher probability underflows.
    return F.kl_div(
        F.log_softmax(student_logits, dim=-1),
        F.log_softmax(teacher_logits.detach(), dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def info_nce(query: Tensor, key: Tensor, bank: Tensor, tau: float) -> Tensor:
    """Eq. 2 for one part z in {f_h, f_tr}: MoCo InfoNCE with the other view's key as positive.

    query (B, D), key (B, D), bank (N, D) -> scalar. Logits are [q . k, q . bank^T] / tau
    (B, 1 + N); cross entropy with the positive at index 0, mean over the batch. The
    branch's L_CL of Eq. 2 is the sum of this over the hand and the trunk part. (The
    paper's typesetting puts tau outside the exp for the negatives; the standard MoCo
    form, used by the authors' code, divides every logit by tau, as here.) tau_c = 0.07.
    """
    key, bank = key.detach(), bank.detach()
    positive = (query * key).sum(dim=-1, keepdim=True)
    logits = torch.cat([positive, query @ bank.T], dim=1) / tau
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def part_consistency(q_hand: Tensor, q_trunk: Tensor, k_hand: Tensor, k_trunk: Tensor, tau: float) -> Tensor:
    """Eq. 3: L_con = KL(p(k_hand) || p(q_trunk)) + KL(p(k_trunk) || p(q_hand)), p(f, tau) = softmax(f / tau).

    All four are (B, D) -> scalar. The softmax runs over the D embedding dimensions of each
    sample. The key (momentum encoder, no gradient) of one part is the target for the query
    of the other part, so the loss is asymmetric in query / key. Each KL is "batchmean":
    summed over the D entries as in the paper's KL definition, then averaged over the batch
    so the value does not depend on the batch size. tau_1 = 0.1 in the paper.
    """
    return _kl_batchmean(k_hand / tau, q_trunk / tau) + _kl_batchmean(k_trunk / tau, q_hand / tau)


def knowledge_transfer(
    teacher_key: Tensor,
    teacher_bank: Tensor,
    student_query: Tensor,
    student_bank: Tensor,
    k: int,
    tau_teacher: float,
    tau_student: float,
) -> Tensor:
    """Eq. 5-6, one direction A -> B: KL(p(f~^A, tau_t, S^A; N+) || p(f^B, tau_s, S^B; N+)).

    teacher_key (B, D) and teacher_bank (N, D) from modality A; student_query (B, D) and
    student_bank (N, D) from modality B, whose row i belongs to the same past sample as row
    i of teacher_bank. Returns a scalar.

    N+ (B, k) are, per sample, the indices of the k largest teacher_key . teacher_bank^T.
    Teacher p = softmax over N+ of teacher_key . teacher_bank[N+] / tau_teacher; student
    q = softmax over the SAME indices of student_query . student_bank[N+] / tau_student
    (not the student's own nearest neighbours). KL is summed over the k entries and averaged
    over the batch. Paper: K = 8192, tau_t = 0.05, tau_s = 0.1; Eq. 7 adds J -> M and M -> J.
    """
    n = teacher_bank.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"knowledge transfer needs 1 <= k <= bank size, got k={k} for a bank of {n} entries")
    if student_bank.shape[0] != n:
        raise ValueError(
            f"teacher and student banks must have the same number of entries (indices are shared), "
            f"got {n} and {student_bank.shape[0]}"
        )
    teacher_key, teacher_bank, student_bank = teacher_key.detach(), teacher_bank.detach(), student_bank.detach()
    # The KL is the same in any order of the k entries, so skip sorting them (about 3x faster for K = 8192).
    teacher_top, neighbours = torch.topk(teacher_key @ teacher_bank.T, k, dim=-1, sorted=False)
    # One (B, N) matmul then a gather is cheaper than materialising student_bank[neighbours] (B, k, D).
    student = torch.gather(student_query @ student_bank.T, -1, neighbours)
    return _kl_batchmean(teacher_top / tau_teacher, student / tau_student)


def neighbour_consistency(
    q_hand: Tensor,
    q_trunk: Tensor,
    k_hand: Tensor,
    k_trunk: Tensor,
    hand_bank: Tensor,
    trunk_bank: Tensor,
    k: int,
    tau_teacher: float,
    tau_student: float,
) -> Tensor:
    """The authors' code's hand/trunk consistency (their replacement for Eq. 3), for one modality.

    q_*/k_* (B, D), hand_bank/trunk_bank (N, D) with row i of both from the same past sample.
    Returns knowledge_transfer(k_hand, hand_bank, q_trunk, trunk_bank, ...)
    + knowledge_transfer(k_trunk, trunk_bank, q_hand, hand_bank, ...): Eq. 5-6 applied across
    parts instead of modalities. The hand key's top-k neighbours in the hand bank define the
    teacher distribution (tau_teacher) that the trunk query's similarities to the trunk bank
    on the same indices (tau_student) must match, and vice versa.

    Facts from the official repository: pretrain.py builds moco/builder_dist.py's MoCo (the
    stored moco/builder.py has only the fine-tuning path); this loss is its `self_dist` branch,
    on with `--inter-dist` in script_pretrain.sh. Hand and trunk ("body") embeddings are
    L2-normalized; each part has its own queue of K_part = 8192 keys per modality; neighbours
    are torch.topk of key . part-queue with topk_part = 1024 (a constructor default, not a
    command-line flag); temperatures are the knowledge transfer's (0.05 teacher / 0.1 student);
    KL via log_softmax / softmax with reduction "batchmean"; the queues are read before the
    batch's keys are enqueued; the four terms (hand->trunk, trunk->hand, for joint and motion)
    are summed with weight 1 into the total loss (`loss_inter_dist` in pretrain.py).
    """
    hand_to_trunk = knowledge_transfer(k_hand, hand_bank, q_trunk, trunk_bank, k, tau_teacher, tau_student)
    trunk_to_hand = knowledge_transfer(k_trunk, trunk_bank, q_hand, hand_bank, k, tau_teacher, tau_student)
    return hand_to_trunk + trunk_to_hand


def total_loss(
    cl_joint: Tensor | None,
    con_joint: Tensor | None,
    cl_motion: Tensor | None,
    con_motion: Tensor | None,
    kt: Tensor | None,
    *,
    lambda_joint: float,
    lambda_motion: float,
) -> Tensor:
    """Eq. 8: L = lambda_J (L_CL^J + L_con^J) + lambda_M (L_CL^M + L_con^M) + L_KT.

    Each term is a scalar tensor, or None when it is switched off (a branch not trained, the
    consistency or knowledge transfer ablated); absent terms contribute nothing. The paper
    uses lambda_J = lambda_M = 0.5. The authors' code sums every term with weight 1 (its
    --inter-weight flag is parsed but unused): lambda_joint = lambda_motion = 1 reproduces it.
    """
    weighted = [
        (lambda_joint, cl_joint),
        (lambda_joint, con_joint),
        (lambda_motion, cl_motion),
        (lambda_motion, con_motion),
        (1.0, kt),
    ]
    terms = [weight * term for weight, term in weighted if term is not None]
    if not terms:
        raise ValueError("total_loss needs at least one loss term; every term is None")
    return sum(terms[1:], terms[0])


@torch.no_grad()
def embedding_stats(query: Tensor, key: Tensor, bank: Tensor) -> dict[str, Tensor]:
    """Diagnostics of one part's unit embeddings (no gradient), to tell why InfoNCE does or does not fall.

    query, key (B, D) of the two views, bank (N, D). Returns 0-d tensors (read them once per
    logging interval, not per step):
    - positive: mean cosine q . k of the positive pairs;
    - negative: mean cosine q . bank of the negatives the loss sees;
    - alignment: Wang & Isola's E ||q - k||^2 over positive pairs (0 = views agree perfectly);
    - uniformity: log E exp(-2 ||q_i - q_j||^2) over pairs of distinct queries of the batch
      (0 = every embedding the same point, i.e. collapse; about -4 for embeddings spread over the sphere).
    positive close to negative with uniformity near 0 means the embeddings have collapsed to one direction.
    """
    query, key, bank = query.float(), key.float(), bank.float()
    count = query.shape[0]
    distances = torch.cdist(query, query).pow(2)
    # The mean over the off-diagonal pairs as a masked sum: selecting them (distances[mask])
    # would make the CPU wait for the GPU to learn how many there are, every step.
    diagonal = torch.eye(count, dtype=torch.bool, device=query.device)
    uniformity = (
        distances.mul(-2).exp().masked_fill(diagonal, 0).sum().div(count * (count - 1)).log()
        if count > 1 else torch.zeros((), device=query.device)
    )
    return {
        "positive": (query * key).sum(1).mean(),
        # mean over (i, j) of q_i . b_j = mean_i q_i . mean_j b_j: no second (B, N) product per step.
        "negative": (query @ bank.mean(0)).mean(),
        "alignment": (query - key).pow(2).sum(1).mean(),
        "uniformity": uniformity,
    }
