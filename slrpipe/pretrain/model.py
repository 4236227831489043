"""The whole pretraining method in one module: query/key encoders per modality, their MLP
heads, the memory banks and every loss term (METHOD.md section 6)."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from slrpipe.pretrain import losses
from slrpipe.config import ModelSize, PretrainParams
from slrpipe.model import SignEncoder, branches_of, parts_of
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

    def forward(self, coords: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.encoder(coords, masks)
        if "global" in self.heads:
            features["global"] = sum(features.values())
        return {name: F.normalize(head(features[name]), dim=1) for name, head in self.heads.items()}


def gather(keys: torch.Tensor) -> torch.Tensor:
    """Keys of every rank, concatenated (identity without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts)


class Pretrainer(nn.Module):
    """Call with two augmented views from the loader; returns every loss term and the total."""

    def __init__(self, size: ModelSize, settings: PretrainParams) -> None:
        super().__init__()
        self.settings = settings
        self.modalities = branches_of(settings.branches)
        self.parts = parts_of(settings.parts)
        global_head = settings.transfer_anchors == "global"
        self.query = nn.ModuleDict({m: Branch(size, self.parts, global_head) for m in self.modalities})
        self.key = copy.deepcopy(self.query)
        for parameter in self.key.parameters():
            parameter.requires_grad_(False)
        self.key.load_state_dict(self.query.state_dict())
        # One bank per modality and part (paper); the authors' form adds a global bank and
        # keeps the part banks smaller.
        part_bank = settings.part_bank_size if global_head else settings.bank_size
        banks = {f"{m}_{p}": KeyQueue(part_bank, size.head_dim) for m in self.modalities for p in self.parts}
        if global_head:
            banks.update({f"{m}_global": KeyQueue(settings.bank_size, size.head_dim) for m in self.modalities})
        self.banks = nn.ModuleDict(banks)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query, over all parameters at once."""
        m = self.settings.momentum
        key_params = list(self.key.parameters())
        torch._foreach_mul_(key_params, m)
        torch._foreach_add_(key_params, list(self.query.parameters()), alpha=1 - m)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Every bank's keys as this step's losses see them, copied once: the enqueue at the
        end of the step writes into the buffers that backward still needs."""
        return {name: queue.keys.clone() for name, queue in self.banks.items()}

    def anchors(self, banks: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        """Knowledge-transfer anchors S: hand bank + trunk bank (paper) or the global bank."""
        if self.settings.transfer_anchors == "global":
            return banks[f"{modality}_global"]
        return sum(banks[f"{modality}_{part}"] for part in self.parts)

    def total_embedding(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.settings.transfer_anchors == "global":
            return embeddings["global"]
        return sum(embeddings[part] for part in self.parts)

    def forward(self, view_q: dict, view_k: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss terms with "total", diagnostics of the embeddings): 0-d tensors, left on the device."""
        s = self.settings
        query = {m: self.query[m](view_q[m], view_q["mask"]) for m in self.modalities}
        with torch.no_grad():
            self.momentum_update()
            key = {m: self.key[m](view_k[m], view_k["mask"]) for m in self.modalities}

        banks = self.snapshot()
        terms: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        contrasted = self.parts + (("global",) if s.transfer_anchors == "global" else ())
        for m in self.modalities:
            terms[f"contrast_{m}"] = sum(
                losses.info_nce(query[m][p], key[m][p], banks[f"{m}_{p}"], s.tau_contrast) for p in contrasted
            )
            if s.use_consistency and self.parts == ("hand", "trunk"):
                q, k = query[m], key[m]
                if s.consistency_form == "softmax":
                    terms[f"consistency_{m}"] = losses.part_consistency(q["hand"], q["trunk"], k["hand"], k["trunk"], s.tau_consistency)
                else:
                    terms[f"consistency_{m}"] = losses.neighbour_consistency(
                        q["hand"], q["trunk"], k["hand"], k["trunk"], banks[f"{m}_hand"], banks[f"{m}_trunk"],
                        s.neighbour_top_k, s.neighbour_tau_teacher, s.neighbour_tau_student,
                    )
        if s.use_knowledge_transfer and len(self.modalities) == 2:
            anchors = {m: self.anchors(banks, m) for m in self.modalities}
            directions = [("joint", "motion")] * s.transfer_joint_to_motion + [("motion", "joint")] * s.transfer_motion_to_joint
            for teacher, student in directions:
                terms[f"transfer_{teacher}_to_{student}"] = losses.knowledge_transfer(
                    self.total_embedding(key[teacher]), anchors[teacher],
                    self.total_embedding(query[student]), anchors[student],
                    s.transfer_top_k, s.tau_teacher, s.tau_student,
                )

        # Diagnostics, no gradient: positive / negative cosine, alignment and uniformity of each
        # contrasted embedding tell collapse, too-different views and stale negatives apart.
        for m in self.modalities:
            for p in contrasted:
                for stat, value in losses.embedding_stats(query[m][p], key[m][p], banks[f"{m}_{p}"]).items():
                    diagnostics[f"{stat}_{m}_{p}"] = value

        transfer = [value for name, value in terms.items() if name.startswith("transfer_")]
        total = losses.total_loss(
            terms.get("contrast_joint"), terms.get("consistency_joint"),
            terms.get("contrast_motion"), terms.get("consistency_motion"),
            sum(transfer) if transfer else None,
            lambda_joint=s.lambda_joint, lambda_motion=s.lambda_motion,
        )
        terms["total"] = total

        # Enqueue after the losses used the banks: this batch's keys are negatives from the next step on.
        self._enqueue(key)
        return terms, diagnostics

    @torch.no_grad()
    def _enqueue(self, key: dict[str, dict[str, torch.Tensor]]) -> None:
        for m in self.modalities:
            for part, embedding in key[m].items():
                self.banks[f"{m}_{part}"].enqueue(gather(embedding) if self.settings.gather_keys else embedding)

    @torch.no_grad()
    def enqueue_keys(self, view: dict) -> None:
        """The key encoders' embeddings of one view batch into the banks, without a loss or an
        update (pretrain.bank_init: keys fills the banks this way before the first step)."""
        self._enqueue({m: self.key[m](view[m], view["mask"]) for m in self.modalities})

    @torch.no_grad()
    def features(self, view: dict) -> torch.Tensor:
        """Query encoders' sequence features f = f_hand + f_trunk, concatenated over modalities (kNN monitor)."""
        return torch.cat([F.normalize(sum(self.query[m].encoder(view[m], view["mask"]).values()), dim=1)
                          for m in self.modalities], dim=1)
