"""Dataset sources: every kind of dataset becomes the same manifest.

Paths in the manifest are relative to the dataset folder (`dataset_folder`), so the manifest,
and every output that copies its paths, is the same on every clone of the project; a path the
user gave outside that folder (an absolute path in a manifest CSV) is kept as given.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from slrpipe.config import DatasetParams
from slrpipe.errors import RootError
from slrpipe.pose.manifest import KIND_MMPOSE_JSON, KIND_VIDEO, Manifest, finalize
from slrpipe.pose.sources import local, official


def dataset_folder(dataset: DatasetParams) -> Path:
    """The folder manifest paths are relative to: the root, or for a `manifest` source the CSV's folder."""
    return dataset.root.parent if dataset.source == "manifest" else dataset.root


def relative_path(path: str, folder: Path) -> str:
    """`path` relative to `folder` when it lies in it (lexically: a symlink keeps its name), else as given."""
    if not path:
        return path
    try:
        return Path(path).absolute().relative_to(folder.absolute()).as_posix()
    except ValueError:
        return path


def build_manifest(dataset: DatasetParams, name: str | None = None) -> Manifest:
    """Every sample of `dataset` (the one called `name` under datasets:, for error messages)."""
    try:
        return _build_manifest(dataset)
    except RootError as error:
        raise RootError(f"datasets.{name or '<name>'}.root {error}") from None


def _build_manifest(dataset: DatasetParams) -> Manifest:
    root = dataset.root
    if dataset.source == "wlasl":
        rows, problems = official.read_wlasl(root, dataset.num_classes)
    elif dataset.source == "msasl":
        rows, problems = official.read_msasl(root, dataset.num_classes, dataset.msasl_clip_template)
    elif dataset.source == "nmfs_csl":
        rows, problems = official.read_nmfs_csl(root)
    elif dataset.source == "slr500":
        rows, problems = official.read_slr500(root)
    elif dataset.source == "video_folder":
        rows, problems = local.read_files_by_folder(root, KIND_VIDEO)
    elif dataset.source == "mmpose_json":
        rows, problems = local.read_files_by_folder(root, KIND_MMPOSE_JSON)
    elif dataset.source == "mp_data":
        rows, problems = local.read_mp_data(root)
    else:  # "manifest": the config's Literal admits nothing else
        rows, problems = local.read_manifest_csv_source(root)
    folder = dataset_folder(dataset)
    rows = [replace(row, path=relative_path(row.path, folder)) for row in rows]
    problems = [replace(problem, path=relative_path(problem.path, folder)) for problem in problems]
    manifest = finalize(rows, problems)
    if not dataset.labelled:
        manifest = unlabelled(manifest)
    return manifest


def unlabelled(manifest: Manifest) -> Manifest:
    """The manifest of recordings without glosses: whatever the folders are called, no sample has
    a gloss or label (-1), and every one is a training sample (they only serve pretraining)."""
    rows = [replace(row, gloss="", label=-1, split="train") for row in manifest.rows]
    return Manifest(rows=rows, glosses=[], problems=manifest.problems)
