"""The whole pretraining method in one module: query/key encoders per modality, their MLP
heads, the memory banks and every loss term (METHOD.md section 6)."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from slrpipe.config import ModelSize, PretrainParams
from slrpipe.data.augment import mask_of
from slrpipe.model import SignEncoder, branches_of, initialise, parts_of
from slrpipe.pretrain import losses
from slrpipe.pretrain.queue import KeyQueue


class Projector(nn.Sequential):
    """The pretraining head: width -> hidden -> ReLU -> head_dim."""

    def __init__(self, size: ModelSize) -> None:
        super().__init__(nn.Linear(size.width, size.head_hidden), nn.ReLU(inplace=True), nn.Linear(size.head_hidden, size.head_dim))


class Branch(nn.Module):
    """One modality's encoder with an MLP head on each part it encodes, giving L2-normalized
    embeddings. Only the used parts and heads exist, so every parameter gets a gradient (DDP)."""

    def __init__(self, size: ModelSize, parts: tuple[str, ...], global_head: bool) -> None:
        super().__init__()
        self.encoder = SignEncoder(size, parts)
        self.heads = nn.ModuleDict({part: Projector(size) for part in self.encoder.parts})
        if global_head:  # authors' form: one more head on the summed feature (f_hand + f_trunk)
            self.heads["global"] = Projector(size)
        initialise(self.heads, size.form.init)

    def forward(self, coords: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.encoder(coords, masks)
        if "global" in self.heads:
            features["global"] = sum(features.values())
        return {name: F.normalize(head(features[name]).float(), dim=1) for name, head in self.heads.items()}  # see forward


def gather(keys: torch.Tensor) -> torch.Tensor:
    """Keys of every rank, concatenated (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class Pretrainer(nn.Module):
    """Call with two augmented views from the loader; returns every loss term and the total.

    What the settings switch on or off (branches, parts, the global head, consistency, each
    knowledge-transfer direction) is resolved here once, so `forward` reads as Eq. 8."""

    def __init__(self, size: ModelSize, settings: PretrainParams) -> None:
        super().__init__()
        self.settings = settings
        self.modalities = branches_of(settings.branches)
        self.parts = parts_of(settings.parts)
        global_head = settings.transfer_anchors == "global"
        # The embeddings InfoNCE runs on: each part (paper), plus the global one (authors' code).
        self.contrasted = self.parts + (("global",) if global_head else ())
        self.query = nn.ModuleDict({m: Branch(size, self.parts, global_head) for m in self.modalities})
        self.key = copy.deepcopy(self.query)
        for parameter in self.key.parameters():
            parameter.requires_grad_(False)
        self.key.load_state_dict(self.query.state_dict())
        # One bank per modality and contrasted embedding; the authors' global bank has bank_size
        # keys and their part banks part_bank_size.
        part_bank = settings.part_bank_size if global_head else settings.bank_size
        self.banks = nn.ModuleDict({m: nn.ModuleDict({p: KeyQueue(settings.bank_size if p == "global" else part_bank, size.head_dim)
                                                      for p in self.contrasted}) for m in self.modalities})
        self.weight = {"joint": settings.lambda_joint, "motion": settings.lambda_motion}
        # Consistency ties the hand to the trunk, so it needs both parts.
        self.consistency = self._consistency_loss if settings.use_consistency and self.parts == ("hand", "trunk") else None
        directions = [("joint", "motion")] * settings.transfer_joint_to_motion + [("motion", "joint")] * settings.transfer_motion_to_joint
        self.transfers = directions if settings.use_knowledge_transfer and len(self.modalities) == 2 else []

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query, over all parameters at once."""
        m = self.settings.momentum
        key_params = list(self.key.parameters())
        torch._foreach_mul_(key_params, m)
        torch._foreach_add_(key_params, list(self.query.parameters()), alpha=1 - m)

    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every bank's keys as this step's losses see them, copied once: the enqueue at the
        end of the step writes into the buffers that backward still needs."""
        return {m: {p: queue.keys.clone() for p, queue in banks.items()} for m, banks in self.banks.items()}

    def total_embedding(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        """f~ = f~_hand + f~_trunk (paper) or the global head's embedding (authors' code); with
        the banks in place of embeddings, the knowledge-transfer anchors S."""
        if "global" in embeddings:
            return embeddings["global"]
        return sum(embeddings[part] for part in self.parts)

    def _consistency_loss(self, query: dict, key: dict, banks: dict) -> torch.Tensor:
        s = self.settings
        if s.consistency_form == "softmax":  # paper, Eq. 3
            return losses.part_consistency(query["hand"], query["trunk"], key["hand"], key["trunk"], s.tau_consistency)
        return losses.neighbour_consistency(query["hand"], query["trunk"], key["hand"], key["trunk"], banks["hand"],
                                            banks["trunk"], s.neighbour_top_k, s.neighbour_tau_teacher, s.neighbour_tau_student)

    def forward(self, view_q: dict, view_k: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss terms with "total", diagnostics of the embeddings): 0-d tensors, left on the device."""
        s = self.settings
        query = {m: self.query[m](view_q[m], mask_of(view_q, m)) for m in self.modalities}
        with torch.no_grad():
            self.momentum_update()
            key = {m: self.key[m](view_k[m], mask_of(view_k, m)) for m in self.modalities}
        banks = self.snapshot()

        # The losses in float32, also under bfloat16 autocast: a bfloat16 cosine keeps 8 bits, and
        # divided by tau_contrast 0.07 its rounding would move a logit by up to 0.06.
        with torch.autocast(banks[self.modalities[0]][self.contrasted[0]].device.type, enabled=False):
            # Eq. 2: InfoNCE per modality, summed over the contrasted embeddings.
            contrast = {m: sum(losses.info_nce(query[m][p], key[m][p], banks[m][p], s.tau_contrast) for p in self.contrasted)
                        for m in self.modalities}
            # Eq. 3: hand-trunk consistency per modality.
            consistency = {m: self.consistency(query[m], key[m], banks[m]) for m in self.modalities} if self.consistency else {}
            # Eq. 4-7: knowledge transfer from the teacher modality's key to the student's query.
            transfer = {f"transfer_{t}_to_{u}": losses.knowledge_transfer(
                self.total_embedding(key[t]), self.total_embedding(banks[t]), self.total_embedding(query[u]),
                self.total_embedding(banks[u]), s.transfer_top_k, s.tau_teacher, s.tau_student) for t, u in self.transfers}
            # Eq. 8.
            total = losses.total_loss(contrast.get("joint"), consistency.get("joint"), contrast.get("motion"),
                                      consistency.get("motion"), sum(transfer.values()) if transfer else None,
                                      lambda_joint=s.lambda_joint, lambda_motion=s.lambda_motion)
            terms = {**{f"contrast_{m}": v for m, v in contrast.items()}, **{f"consistency_{m}": v for m, v in consistency.items()},
                     **transfer, "total": total}

            # Diagnostics, no gradient: positive / negative cosine, alignment and uniformity of each
            # contrasted embedding tell collapse, too-different views and stale negatives apart.
            diagnostics = {f"{stat}_{m}_{p}": value for m in self.modalities for p in self.contrasted
                           for stat, value in losses.embedding_stats(query[m][p], key[m][p], banks[m][p]).items()}

        # Enqueue after the losses used the banks: this batch's keys are negatives from the next step on.
        self._enqueue(key)
        return terms, diagnostics

    @torch.no_grad()
    def _enqueue(self, key: dict[str, dict[str, torch.Tensor]]) -> None:
        for m in self.modalities:
            for part, embedding in key[m].items():
                self.banks[m][part].enqueue(gather(embedding) if self.settings.gather_keys else embedding)

    @torch.no_grad()
    def enqueue_keys(self, view: dict) -> None:
        """The key encoders' embeddings of one view batch into the banks, without a loss or an
        update (pretrain.bank_init: keys fills the banks this way before the first step)."""
        self._enqueue({m: self.key[m](view[m], mask_of(view, m)) for m in self.modalities})

    def queues(self) -> list[KeyQueue]:
        return [queue for banks in self.banks.values() for queue in banks.values()]

    @torch.no_grad()
    def features(self, view: dict) -> torch.Tensor:
        """Query encoders' sequence features f = f_hand + f_trunk, concatenated over modalities (kNN monitor)."""
        return torch.cat([F.normalize(sum(self.query[m].encoder(view[m], mask_of(view, m)).values()), dim=1)
                          for m in self.modalities], dim=1)
