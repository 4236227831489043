"""The manifest: one row per sample, the same table whatever the dataset source.

Every source adapter yields `ManifestRow`s (without label indices) and `Problem`s for the
entries it could not use. `finalize` assigns label indices from the sorted gloss list, so
labels are stable across runs and machines.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# What an input file is, decided once by the adapter: the extractor dispatches on it.
KIND_VIDEO = "video"
KIND_MP_FRAMES = "mp_frames"  # a folder of per-frame .npy vectors
KIND_MP_SEQUENCE = "mp_sequence"  # one (T, D) .npy array
KIND_MMPOSE_JSON = "mmpose_json"
KINDS = (KIND_VIDEO, KIND_MP_FRAMES, KIND_MP_SEQUENCE, KIND_MMPOSE_JSON)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"})

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    sample_id: str
    path: str  # from build_manifest: relative to the dataset folder (slrpipe.pose.sources.dataset_folder)
    kind: str
    gloss: str
    signer: str = ""
    split: str = ""
    label: int = -1


@dataclass(frozen=True)
class Problem:
    """An input that was reported and skipped."""

    sample_id: str
    path: str
    problem: str


@dataclass
class Manifest:
    rows: list[ManifestRow]
    glosses: list[str]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


COLUMNS = [f.name for f in fields(ManifestRow)]

# str.splitlines also breaks lines at these, so a gloss holding one would take two lines of
# glosses.txt and shift every later gloss off its label index.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def gloss_problem(gloss: str) -> str | None:
    """Why `gloss` (already stripped) cannot name a class, or None when it can."""
    if not gloss:
        return "no gloss"
    if any(char in _LINE_BREAKS or unicodedata.category(char) == "Cc" for char in gloss):
        return f"gloss {gloss!r} holds a line break or control character: glosses.txt has one gloss per line"
    return None


def finalize(rows: list[ManifestRow], problems: list[Problem]) -> Manifest:
    """Sort rows by sample id, drop repeated ids and glosses unfit for glosses.txt, and assign
    label indices by sorted gloss.

    Sorting makes the manifest independent of file-system listing order, so the same data
    gives the same table, labels and shards on every machine.
    """
    seen: dict[str, str] = {}
    unique: list[ManifestRow] = []
    for row in sorted(rows, key=lambda r: r.sample_id):
        gloss = row.gloss.strip()  # "hello " and "hello" are one sign
        if problem := gloss_problem(gloss):
            problems.append(Problem(row.sample_id, row.path, problem))
            continue
        row = replace(row, gloss=gloss)
        if row.sample_id in seen:
            problems.append(Problem(row.sample_id, row.path, f"duplicate sample id (also {seen[row.sample_id]})"))
            continue
        seen[row.sample_id] = row.path
        unique.append(row)
    glosses = sorted({row.gloss for row in unique})
    label_of = {gloss: index for index, gloss in enumerate(glosses)}
    labelled = [replace(row, label=label_of[row.gloss]) for row in unique]
    return Manifest(rows=labelled, glosses=glosses, problems=problems)


def drop_empty_classes(glosses: list[str], labels: list[int], kept: list[int]) -> tuple[list[str], dict[int, int], list[Problem]]:
    """Leave out the glosses none of whose samples was kept.

    `labels` are every sample's labels, `kept` those of the samples kept. Returns the glosses
    that remain, the old -> new label of each (renumbered 0..C-1 in the same sorted order, so
    line i of glosses.txt stays label i) and one report row per gloss left out.
    """
    present = sorted(label for label in set(kept) if label >= 0)
    # -1 (no label: an unlabelled dataset's samples) stays -1.
    new_label = {-1: -1, **{old: new for new, old in enumerate(present)}}
    counts = Counter(labels)
    dropped = [
        Problem("", "", f"gloss {gloss!r} dropped: none of its {counts[label]} sample(s) is usable; labels renumbered")
        for label, gloss in enumerate(glosses) if label not in new_label
    ]
    return [glosses[old] for old in present], new_label, dropped


def kind_of_path(path: Path) -> str | None:
    """Input kind from a path alone, or None when the path is none of the known kinds."""
    if path.is_dir():
        return KIND_MP_FRAMES
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return KIND_VIDEO
    if suffix == ".json":
        return KIND_MMPOSE_JSON
    if suffix == ".npy":
        return KIND_MP_SEQUENCE
    return None


def write_manifest_csv(manifest: Manifest, path: Path) -> None:
    path.write_text(manifest_csv_text(manifest.rows), encoding="utf-8")


def manifest_csv_text(rows: list[ManifestRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


def read_manifest_csv(path: Path) -> list[ManifestRow]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            ManifestRow(**{**record, "label": int(record["label"])})
            for record in csv.DictReader(handle)
        ]
