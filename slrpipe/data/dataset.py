"""The training data loader: a torch Dataset over preprocess's dataset.h5.

Modes:
- `pretrain`: two independently augmented views of each sample (contrastive pretraining,
  settings augment.pretrain);
- `train`: one augmented view and the label (fine-tuning, augment.finetune);
- `eval`: the centred augment.test_crop of the sequence resampled to T' frames, no randomness,
  and the label.

Randomness comes from a generator seeded with (seed, epoch, index), so a sample's views
depend only on those three numbers, whatever the number of workers or the order.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from collections.abc import Collection
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from slrpipe.data.augment import clean_view, training_views
from slrpipe.data.frames import require_resolved
from slrpipe.config import AugmentParams
from slrpipe.engine.loop import to_device
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile

Mode = Literal["pretrain", "train", "eval"]


def eval_view(coords: np.ndarray, mask: np.ndarray, settings: AugmentParams) -> dict[str, dict[str, torch.Tensor]]:
    """The model's input for one sample without augmentation (augment.test_crop of it, resampled to
    T' frames). Validation, the kNN monitor, `evaluate` and `slrpipe predict` all come through here.

    Coordinates go through float32 first, as dataset.h5 stores them, so a sequence prepared
    on the fly gives bit-identical tensors to the same sequence read from the file.
    """
    coords = np.asarray(coords, dtype=np.float32).astype(np.float64)
    mask = np.asarray(mask, dtype=bool)
    return to_device(clean_view(coords, mask, settings))


class PoseDataset(Dataset):
    def __init__(
        self,
        path: Path,
        settings: AugmentParams,
        mode: Mode = "eval",
        split: str | None = None,
        subset: str | None = None,
        seed: int = 0,
        only_ids: Collection[str] | None = None,
        rng_offset: int = 0,
    ) -> None:
        """`only_ids`: only these samples (a pretraining corpus's choice). `rng_offset` is added
        to a sample's position in its random draws, so the members of a corpus, each its own
        PoseDataset, draw as one dataset would (member k starts where member k - 1 ends)."""
        self.path = Path(path)
        require_resolved(settings, str(self.path))
        self.settings = settings
        self.mode = mode
        self.seed = seed
        self.rng_offset = rng_offset
        self.epoch = 0
        if not self.path.is_file():
            raise SlrpipeError(f"{self.path} not found: run the preprocess stage first (dvc repro preprocess)")
        with RaggedFile(self.path) as dataset:
            splits = dataset.column("split")
            sample_ids = dataset.column("sample_id")
            self.labels = np.asarray(dataset.column("label"), dtype=np.int64)
            self.glosses: list[str] = dataset.attr("glosses")
            self.left_mirrored = bool(dataset.attr("preprocess")["mirror_left_hand"])
            subsets: dict[str, list[str]] = dataset.attr("label_subsets")
            labelled = bool(dataset.attr("labelled", True))
        # An unlabelled dataset's samples have no label (-1): only pretraining may read them.
        if not labelled and mode != "pretrain":
            raise SlrpipeError(f"{self.path} holds unlabelled recordings (datasets.<name>.labelled: false): they only "
                               "serve pretraining, never fine-tuning, evaluation or the kNN monitor")
        chosen = range(len(sample_ids)) if split is None else [i for i, s in enumerate(splits) if s == split]
        if only_ids is not None:
            wanted = set(only_ids)
            chosen = [i for i in chosen if sample_ids[i] in wanted]
        if subset is not None:
            if subset not in subsets:
                raise SlrpipeError(f"label subset {subset!r} not in {self.path} (has {', '.join(subsets) or 'none'})")
            allowed = set(subsets[subset])
            chosen = [i for i in chosen if sample_ids[i] in allowed]
        self.indices = np.asarray(list(chosen), dtype=np.int64)
        self.sample_ids = [sample_ids[i] for i in self.indices]
        self._file: RaggedFile | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """New augmentations each epoch, still reproducible."""
        self.epoch = epoch

    def _open(self) -> RaggedFile:
        # HDF5 handles must not cross a fork: each worker process opens its own.
        if self._file is None or self._pid != os.getpid():
            self._file = RaggedFile(self.path)
            self._pid = os.getpid()
        return self._file

    def sequence(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored (T, 49, 2) coordinates and (T, 49) mask of the position-th sample."""
        dataset = self._open()
        index = int(self.indices[position])
        return dataset.frames("coords", index).astype(np.float64), dataset.frames("mask", index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The sample at `position` or, from a training loader, at `(epoch, position)` (the epoch
        set in this process does not reach persistent worker processes: slrpipe.engine.loop)."""
        epoch, position = key if isinstance(key, tuple) else (self.epoch, key)
        coords, mask = self.sequence(position)
        label = torch.tensor(self.labels[self.indices[position]])
        if self.mode == "eval":
            return {"view": eval_view(coords, mask, self.settings), "label": label, "index": torch.tensor(position)}
        rng = np.random.default_rng([self.seed, epoch, self.rng_offset + position])
        count, stage = (2, self.settings.pretrain) if self.mode == "pretrain" else (1, self.settings.finetune)
        # A shared flip mirrors both views or neither; an independent one mirrors one view of two
        # against the other half the time (see augment.pretrain.flip_views).
        shared = self.mode == "pretrain" and self.settings.pretrain.flip_views == "shared"
        flipped = rng.random() < stage.flip_probability if shared else None
        views = training_views(coords, mask, rng, self.settings, stage, self.left_mirrored, count, flipped)
        if self.mode == "pretrain":
            return {"views": to_device(views), "label": label, "index": torch.tensor(position)}
        return {"view": to_device(views[0]), "label": label, "index": torch.tensor(position)}


class CorpusDataset(Dataset):
    """Several PoseDatasets read as one; member k's positions follow member k - 1's, and so do
    their random draws (PoseDataset.rng_offset), so one member alone draws exactly as before."""

    def __init__(self, members: list[PoseDataset]) -> None:
        self.members = members
        self.starts: list[int] = []
        total = 0
        for member in members:
            member.rng_offset = total
            self.starts.append(total)
            total += len(member)
        self.length = total

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        for member in self.members:
            member.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (None, key)
        k = bisect.bisect_right(self.starts, position) - 1
        local = position - self.starts[k]
        return self.members[k][local if epoch is None else (epoch, local)]


def corpus_dataset(members: dict[Path, list[str]], settings: AugmentParams, mode: Mode, seed: int) -> CorpusDataset:
    """A pretraining corpus's samples (dataset.h5 -> the ids chosen from it, slrpipe.data.corpus)
    read as one dataset; a member with no chosen sample is left out."""
    return CorpusDataset([PoseDataset(path, settings, mode, only_ids=ids, seed=seed) for path, ids in members.items() if ids])
