"""Dataset sources: every kind of dataset becomes the same manifest."""

from __future__ import annotations

from slrpipe.config import DatasetParams
from slrpipe.manifest import KIND_MMPOSE_JSON, KIND_VIDEO, Manifest, finalize
from slrpipe.sources import local, official


def build_manifest(dataset: DatasetParams) -> Manifest:
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
    return finalize(rows, problems)
