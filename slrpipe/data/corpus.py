"""The pretraining corpus: which samples of which datasets pretraining reads.

The paper pretrains once on the union of several datasets' training sets, then fine-tunes on
each. `assemble_corpus` takes every member of `pretrain.corpus` (each member's
`pretrain_splits`; all of an unlabelled dataset), leaves out any sample whose content equals a
test sample of a `finetune.targets` dataset (the same recording published in two datasets), and
keeps `pretrain.corpus_fraction` of each member: the samples ranked first by a seeded hash of
their id, so a smaller fraction's samples lie inside a larger one's, and adding or losing other
samples never changes whether a sample is chosen.

The result is written as `corpus.csv` (one row per chosen sample, with its content digest) and
`corpus_summary.json` (counts per member, the kNN monitor's dataset and file digest); pretraining
reads only what corpus.csv names, so a change to any other dataset does not rerun it. Reading
the chosen samples for training is slrpipe.data.dataset.corpus_dataset's job: this module needs
no torch, so the corpus stage depends on none of the training code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slrpipe.config import Params
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import DATASET_FILE, RaggedFile, file_digest, write_json, write_text_atomic

log = logging.getLogger(__name__)

CORPUS_FILE = "corpus.csv"
SUMMARY_FILE = "corpus_summary.json"
COLUMNS = ("dataset", "sample_id", "split", "labelled", "digest")


def member_file(preprocess_dir: Path, name: str) -> Path:
    """Where the preprocess stage of dataset `name` writes its dataset.h5."""
    return preprocess_dir / name / DATASET_FILE


@dataclass(frozen=True)
class CorpusSample:
    dataset: str
    sample_id: str
    split: str
    labelled: bool
    digest: str  # of the preprocessed coordinates and mask: equal content, equal digest


@dataclass
class Corpus:
    """The samples pretraining reads, by member, and the labelled dataset its kNN monitor uses."""

    files: dict[str, Path]  # member -> its dataset.h5
    samples: list[CorpusSample]
    monitor: Path | None  # a labelled dataset.h5 (its train vs val split), or None: no monitor
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_file(cls, path: Path) -> Corpus:
        """One dataset's training split, monitored on its own validation split (as before corpora)."""
        with RaggedFile(path) as data:
            splits, ids = data.column("split"), data.column("sample_id")
            labelled = bool(data.attr("labelled", True))
        samples = [CorpusSample(path.stem, i, s, labelled, "") for i, s in zip(ids, splits) if s == "train"]
        return cls({path.stem: path}, samples, path if labelled else None)

    def ids(self, member: str) -> list[str]:
        return [s.sample_id for s in self.samples if s.dataset == member]

    def members(self) -> dict[Path, list[str]]:
        """Each member's dataset.h5 and the ids chosen from it (what corpus_dataset reads)."""
        return {path: self.ids(name) for name, path in self.files.items()}

    def digest(self) -> str:
        """What a resumed pretraining must share with this one: the samples and every file read."""
        text = corpus_csv_text(self.samples) + "".join(
            f"{name}:{file_digest(path)}\n" for name, path in sorted(self.files.items()) if self.ids(name))
        if self.monitor is not None:
            text += f"monitor:{file_digest(self.monitor)}\n"
        return hashlib.sha256(text.encode()).hexdigest()


def sample_digest(data: RaggedFile, index: int) -> str:
    """SHA-256 (first 32 hex digits) of one sample's stored coordinates and mask."""
    digest = hashlib.sha256()
    for name in ("coords", "mask"):
        array = data.frames(name, index)
        digest.update(f"{name}{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _read_member(path: Path, name: str) -> tuple[list[CorpusSample], bool]:
    if not path.is_file():
        raise SlrpipeError(f"{path} not found: run the preprocess stage of dataset {name} first (dvc repro preprocess@{name})")
    with RaggedFile(path) as data:
        labelled = bool(data.attr("labelled", True))
        ids, splits = data.column("sample_id"), data.column("split")
        samples = [CorpusSample(name, ids[i], splits[i], labelled, sample_digest(data, i)) for i in range(len(ids))]
    return samples, labelled


def fraction_rank(seed: int, dataset: str, sample_id: str) -> str:
    """A sample's place in the fraction order: a seeded hash of (dataset, id) alone."""
    return hashlib.sha256(f"{seed}\0{dataset}\0{sample_id}".encode()).hexdigest()


def take_fraction(samples: list[CorpusSample], fraction: float, seed: int) -> list[CorpusSample]:
    """The first round(fraction x n) samples by fraction_rank: nested over fractions."""
    count = int(fraction * len(samples) + 0.5)
    ranked = sorted(samples, key=lambda s: fraction_rank(seed, s.dataset, s.sample_id))
    return sorted(ranked[:count], key=lambda s: s.sample_id)


def assemble_corpus(params: Params, preprocess_dir: Path) -> Corpus:
    """pretrain.corpus's samples (module docstring), none of them a target's test sample."""
    settings = params.pretrain
    test_digests: dict[str, str] = {}  # digest -> the target's sample it belongs to
    for target in params.finetune.targets:
        samples, _ = _read_member(member_file(preprocess_dir, target), target)
        test_digests.update({s.digest: f"{target}:{s.sample_id}" for s in samples if s.split == "test"})

    files: dict[str, Path] = {}
    chosen: list[CorpusSample] = []
    members: dict[str, dict[str, Any]] = {}
    for name in settings.corpus:
        path = member_file(preprocess_dir, name)
        samples, labelled = _read_member(path, name)
        splits = params.datasets[name].pretrain_splits if labelled else ("train",)
        eligible = [s for s in samples if s.split in splits]
        clean = [s for s in eligible if s.digest not in test_digests]
        for sample in eligible:
            if sample.digest in test_digests:
                log.warning("%s:%s left out of the pretraining corpus: the same content is the test sample %s",
                            name, sample.sample_id, test_digests[sample.digest])
        taken = take_fraction(clean, settings.corpus_fraction, settings.seed)
        files[name] = path
        chosen.extend(taken)
        members[name] = {"labelled": labelled, "splits": list(splits), "samples": len(samples), "eligible": len(eligible),
                         "test_duplicates": len(eligible) - len(clean), "chosen": len(taken)}
    monitor_name = params.finetune.targets[0]
    monitor = member_file(preprocess_dir, monitor_name)
    summary = {
        "fraction": settings.corpus_fraction,
        "samples": len(chosen),
        "unlabelled": sum(1 for s in chosen if not s.labelled),
        "members": members,
        # The kNN monitor reads this dataset's train and val splits (file digest: pretraining
        # depends on it through this summary).
        "monitor": {"dataset": monitor_name, "file_digest": file_digest(monitor)},
    }
    return Corpus(files, chosen, monitor, summary)


def corpus_csv_text(samples: Iterable[CorpusSample]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows((s.dataset, s.sample_id, s.split, int(s.labelled), s.digest) for s in samples)
    return buffer.getvalue()


def write_corpus(corpus: Corpus, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / CORPUS_FILE, corpus_csv_text(corpus.samples))
    write_json(out_dir / SUMMARY_FILE, corpus.summary)


def read_corpus(corpus_dir: Path, preprocess_dir: Path) -> Corpus:
    """The corpus the corpus stage wrote, with its members' files under `preprocess_dir`."""
    table, summary_path = corpus_dir / CORPUS_FILE, corpus_dir / SUMMARY_FILE
    for path in (table, summary_path):
        if not path.is_file():
            raise SlrpipeError(f"{path} not found: run the corpus stage first (dvc repro corpus)")
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and set(rows[0]) != set(COLUMNS):
        raise SlrpipeError(f"{table}: expected the columns {', '.join(COLUMNS)}")
    samples = [CorpusSample(r["dataset"], r["sample_id"], r["split"], r["labelled"] == "1", r["digest"]) for r in rows]
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    files = {name: member_file(preprocess_dir, name) for name in summary["members"]}
    return Corpus(files, samples, member_file(preprocess_dir, summary["monitor"]["dataset"]), summary)
