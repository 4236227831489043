"""The `inputs` stage: a content digest of every file a dataset references outside its root.

DVC sees the files of a stage's deps only. extract depends on the dataset's root (datasets.<name>.root), which for a folder
dataset holds every sample; a `manifest` dataset's root is the CSV alone, and the clips and
pose files it lists may lie anywhere. This stage, which `dvc repro` runs every time
(`always_changed`), hashes those files' content into one small table; extract depends on the
table, so it reruns exactly when a referenced file changes, appears or disappears. File sizes
and times are not enough: a re-encoded clip can keep both.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from slrpipe.config import DatasetParams, Params
from slrpipe.h5io import file_digest, write_text_atomic
from slrpipe.pose.sources import build_manifest, dataset_folder

MISSING = "missing"


@dataclass
class InputsResult:
    referenced: int  # files and folders the dataset names outside its root
    samples: int  # every sample the dataset names, inside root or not


def path_digest(path: Path) -> str:
    """SHA-256 of a file's content; for a folder (MediaPipe frames), of its files' names and
    contents; MISSING when there is nothing at `path`."""
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return MISSING
    listing = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        listing.update(f"{file.relative_to(path).as_posix()}\t{file_digest(file)}\n".encode())
    return listing.hexdigest()


def _outside_root(dataset: DatasetParams, path: str) -> bool:
    if dataset.source == "manifest":
        return True  # root is the CSV file: DVC sees none of the files it lists
    # build_manifest writes paths in the root relative to it, any other as given.
    return Path(path).is_absolute() or ".." in Path(path).parts


def referenced_outside_root(dataset: DatasetParams, name: str | None = None) -> tuple[list[str], int]:
    """Paths (as the manifest writes them) of the samples, usable or reported, that DVC does
    not see through the dataset's root; and how many samples the dataset names in all."""
    manifest = build_manifest(dataset, name)
    named = [row.path for row in manifest.rows] + [problem.path for problem in manifest.problems if problem.path]
    return sorted({path for path in named if _outside_root(dataset, path)}), len(named)


def run_inputs(params: Params, out_path: Path, name: str | None = None) -> InputsResult:
    """Digests of the files dataset `name` (None: the only one) references outside its root."""
    name = params.dataset_name(name)
    dataset = params.datasets[name]
    paths, samples = referenced_outside_root(dataset, name)
    folder = dataset_folder(dataset)
    # Hashing reads files: threads overlap the reads (hashlib releases the GIL).
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda path: path_digest(folder / path), paths))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "sha256"])
    writer.writerows(zip(paths, digests))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, buffer.getvalue())
    return InputsResult(len(paths), samples)
