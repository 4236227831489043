"""Adapters for datasets laid out as folders, and for a user-written manifest CSV.

Folder rule shared by `video_folder`, `mmpose_json` and `mp_data`: a sample's gloss is the
name of the folder that holds it, and any folders between the root and the gloss folder
(recording sessions, signers) become its signer group. A sample file placed directly in the
root is its own gloss, named by its stem (a dictionary of one clip per sign).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from slrpipe.errors import RootError, SlrpipeError
from slrpipe.pose.manifest import (
    KIND_MMPOSE_JSON,
    KIND_MP_FRAMES,
    KIND_MP_SEQUENCE,
    KIND_VIDEO,
    SPLITS,
    VIDEO_SUFFIXES,
    ManifestRow,
    Problem,
    gloss_problem,
    kind_of_path,
)

Rows = tuple[list[ManifestRow], list[Problem]]


def _require_dir(root: Path) -> None:
    if not root.is_dir():
        raise RootError(f"{root} is not a folder")


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk in sorted order, skipping hidden entries (.DS_Store, .git)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield Path(folder), dirs, sorted(f for f in files if not f.startswith("."))


def _row_for(root: Path, sample: Path, kind: str, sample_dir: bool = False) -> ManifestRow:
    relative = sample.relative_to(root)
    sample_id = relative.as_posix() if sample_dir else relative.with_suffix("").as_posix()
    parts = relative.parts
    if len(parts) == 1:
        gloss, signer = relative.stem, ""
    else:
        gloss, signer = parts[-2], "/".join(parts[:-2])
    return ManifestRow(sample_id=sample_id, path=str(sample), kind=kind, gloss=gloss, signer=signer)


def read_files_by_folder(root: Path, kind: str) -> Rows:
    """`video_folder` (any common container) and `mmpose_json` (one JSON per video)."""
    _require_dir(root)
    rows = []
    for folder, _, files in _walk(root):
        for name in files:
            path = folder / name
            suffix = path.suffix.lower()
            if (kind == KIND_VIDEO and suffix in VIDEO_SUFFIXES) or (kind == KIND_MMPOSE_JSON and suffix == ".json"):
                rows.append(_row_for(root, path, kind))
    if not rows:
        raise RootError(f"{root}: no {'video' if kind == KIND_VIDEO else 'JSON'} files found")
    return rows, []


def npy_shape(path: Path) -> tuple[int, ...]:
    """Shape from the .npy header alone, without reading the data."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(handle)
    return shape


def read_mp_data(root: Path) -> Rows:
    """MediaPipe "MP_Data" recordings.

    A folder whose .npy files are 1-D vectors is one sequence (one file per frame); .npy
    files holding 2-D (T, D) arrays are one sequence each. Which of the two a folder holds is
    read from the first file's header, since both layouts name their files 0.npy, 1.npy...
    """
    _require_dir(root)
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    for folder, _, files in _walk(root):
        arrays = [name for name in files if name.endswith(".npy")]
        if not arrays:
            continue
        probe = folder / arrays[0]
        try:
            ndim = len(npy_shape(probe))
        except (OSError, ValueError) as error:
            problems.append(Problem(folder.relative_to(root).as_posix(), str(probe), f"unreadable .npy file: {error}"))
            continue
        if ndim == 1:
            if folder == root:
                raise RootError(f"{root} holds frame files directly: expected <gloss>/<sequence>/<frame>.npy")
            rows.append(_row_for(root, folder, KIND_MP_FRAMES, sample_dir=True))
        else:
            rows.extend(_row_for(root, folder / name, KIND_MP_SEQUENCE) for name in arrays)
    if not rows and not problems:
        raise RootError(f"{root}: no .npy recordings found")
    return rows, problems


def read_manifest_csv_source(csv_path: Path) -> Rows:
    """A user's CSV with columns path,gloss,signer,split (and optionally sample_id).

    Paths are videos or pose files of any supported kind, relative to the CSV's folder or absolute.
    """
    if not csv_path.is_file():
        raise RootError(f"{csv_path}: manifest CSV not found")
    records: list[tuple[int, dict]] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        end = 0
        try:
            missing = {"path", "gloss"} - set(reader.fieldnames or [])
            if missing:
                raise SlrpipeError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))} (expected path,gloss,signer,split)")
            # The line a record starts on: a quoted field may span lines, so records and lines differ.
            end = reader.line_num
            for record in reader:
                records.append((end + 1, record))
                end = reader.line_num
        except UnicodeDecodeError as error:
            raise SlrpipeError(f"{csv_path}: not a UTF-8 text CSV file ({error.reason} at byte {error.start})") from None
        except csv.Error as error:
            raise SlrpipeError(f"{csv_path}: not a readable CSV file (line {end + 1}: {error})") from None
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    for line, record in records:
        raw_path = (record.get("path") or "").strip()
        path = Path(raw_path) if Path(raw_path).is_absolute() else csv_path.parent / raw_path
        where = f"{csv_path.name} line {line}"
        gloss = (record.get("gloss") or "").strip()
        split = (record.get("split") or "").strip().lower()
        # `.`, `/`, `..` and the like name no file of their own (and would be no valid sample id).
        if Path(raw_path).name in ("", ".."):
            sample_id = (record.get("sample_id") or "").strip() or where
            problem = "empty path" if not raw_path else f"path {raw_path!r} names a folder above the samples, not a sample"
            problems.append(Problem(sample_id, raw_path, f"{where}: {problem}"))
            continue
        sample_id = (record.get("sample_id") or "").strip() or Path(raw_path).with_suffix("").as_posix()
        if problem := gloss_problem(gloss):
            problems.append(Problem(sample_id, str(path), f"{where}: {problem}"))
        elif split not in ("",) + SPLITS:
            problems.append(Problem(sample_id, str(path), f"{where}: split {split!r} is not one of {', '.join(SPLITS)}"))
        elif not path.exists():
            problems.append(Problem(sample_id, str(path), f"{where}: file not found"))
        elif (kind := kind_of_path(path)) is None:
            problems.append(Problem(sample_id, str(path), f"{where}: not a video, .json, .npy or frame folder"))
        else:
            if kind == KIND_MP_FRAMES or kind == KIND_MP_SEQUENCE:
                kind = _mp_kind(path)
            rows.append(ManifestRow(sample_id, str(path), kind, gloss, (record.get("signer") or "").strip(), split))
    return rows, problems


def _mp_kind(path: Path) -> str:
    return KIND_MP_FRAMES if path.is_dir() else KIND_MP_SEQUENCE
