"""The `extract` stage: every sample of a dataset -> 49 keypoints per frame in one HDF5 file.

Videos go through a pose backend (MMPose whole-body or MediaPipe Holistic), pose files are
imported. Each video's result is cached by the content of the video and the backend
settings, so an interrupted run resumes where it stopped and a rerun after adding videos
only processes the new ones. A bad sample is reported and skipped; the stage fails only
when more than `extract.max_bad_fraction` of the samples are bad.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slrpipe.pose import joints, posefiles
from slrpipe.config import DatasetParams, ExtractParams, Params
from slrpipe.errors import SampleError, SlrpipeError
from slrpipe.h5io import GLOSSES_FILE, RaggedFile, RaggedWriter, file_digest, write_glosses, write_json
from slrpipe.pose.manifest import (
    KIND_MMPOSE_JSON,
    KIND_MP_FRAMES,
    KIND_MP_SEQUENCE,
    KIND_VIDEO,
    Manifest,
    ManifestRow,
    Problem,
    drop_empty_classes,
    write_manifest_csv,
)
from slrpipe.pose.skipped import check_bad_fraction, read_report, write_report
from slrpipe.pose.sources import build_manifest, dataset_folder
from slrpipe.pose.video import iter_frame_batches, video_info

log = logging.getLogger(__name__)

# Bump when the cached per-video result changes meaning, so old cache entries are not reused.
CACHE_VERSION = 1
FILE_FORMAT = "slrpipe.keypoints/1"

KEYPOINTS_FILE = "keypoints.h5"
MANIFEST_FILE = "manifest.csv"
REPORT_FILE = "extract_report.csv"
SUMMARY_FILE = "extract_summary.json"
SHARD_DIR = "shards"


@dataclass
class SampleKeypoints:
    keypoints: np.ndarray  # (T, 49, 3): pixel x, pixel y, score
    frame_size: tuple[int, int]  # (width, height)
    fps: float
    wholebody: np.ndarray | None = None  # (T, 133, 3) when the source is COCO-WholeBody


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'3/8' -> the fourth of eight shards (0-based, like SLURM_ARRAY_TASK_ID)."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise SlrpipeError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 3/8") from None
        if count < 1 or not 0 <= index < count:
            raise SlrpipeError(f"--shard {text!r}: INDEX must be in 0..COUNT-1 (shards are numbered from 0)")
        return cls(index, count)

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def select(self, rows: list[ManifestRow]) -> list[ManifestRow]:
        return rows[self.index :: self.count]


@dataclass
class ExtractResult:
    manifest: Manifest
    extracted: int
    frames: int
    problems: list[Problem] = field(default_factory=list)
    dropped: list[Problem] = field(default_factory=list)  # one per gloss left without samples

    @property
    def total(self) -> int:
        return self.extracted + len(self.problems)

    @property
    def bad_fraction(self) -> float:
        return len(self.problems) / self.total if self.total else 0.0


class Extractor:
    """Turns one manifest row into keypoints; builds the video backend on first use.

    Row paths are relative to `folder` (the dataset folder), or used as given without one.
    """

    def __init__(self, dataset: DatasetParams, settings: ExtractParams, cache_dir: Path | None = None,
                 folder: Path | None = None) -> None:
        self.dataset = dataset
        self.settings = settings
        self.cache_dir = cache_dir
        self.folder = folder
        self._backend = None
        self._backend_key: str | None = None

    # -- videos ---------------------------------------------------------------------------
    def backend_key(self) -> str:
        """What the cached result of a video depends on besides the video itself."""
        if self._backend_key is None:
            s = self.settings
            if s.backend == "mmpose":
                described = {
                    "backend": "mmpose",
                    "pose_config": s.pose_config,
                    "pose_checkpoint": file_digest(s.pose_checkpoint) if s.pose_checkpoint else None,
                    "det_config": s.det_config,
                    "det_checkpoint": file_digest(s.det_checkpoint) if s.det_checkpoint else None,
                    "det_score_threshold": s.det_score_threshold if s.det_config else None,
                }
            else:
                described = {
                    "backend": "mediapipe",
                    "min_detection_confidence": s.mediapipe_min_detection_confidence,
                    "min_tracking_confidence": s.mediapipe_min_tracking_confidence,
                }
            described["cache_version"] = CACHE_VERSION
            self._backend_key = json.dumps(described, sort_keys=True)
        return self._backend_key

    def _make_backend(self):
        s = self.settings
        if s.backend == "mediapipe":
            from slrpipe.pose.backends.mediapipe_backend import MediaPipeEstimator

            return MediaPipeEstimator(s.mediapipe_min_detection_confidence, s.mediapipe_min_tracking_confidence)
        from slrpipe.pose.backends.mmpose_backend import MMPoseEstimator

        if s.pose_checkpoint is None:
            raise SlrpipeError(
                "extract.pose_checkpoint is not set: download the weights of extract.pose_config "
                "(e.g. `mim download mmpose --config <name> --dest checkpoints/`) and set its path in params.yaml"
            )
        if not s.pose_checkpoint.is_file():
            raise SlrpipeError(f"extract.pose_checkpoint {s.pose_checkpoint} does not exist")
        return MMPoseEstimator(
            pose_config=s.pose_config,
            pose_checkpoint=str(s.pose_checkpoint),
            det_config=s.det_config,
            det_checkpoint=str(s.det_checkpoint) if s.det_checkpoint else None,
            device=s.device,
            batch_size=s.batch_size,
            det_score_threshold=s.det_score_threshold,
        )

    @property
    def backend(self):
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def _cache_path(self, video: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{file_digest(video)}\n{self.backend_key()}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npz"

    def _video(self, path: Path) -> SampleKeypoints:
        if not path.is_file():
            raise SampleError("video file not found")
        cache_path = self._cache_path(path)
        if cache_path is not None and cache_path.is_file():
            try:
                return _read_cached(cache_path)
            except (OSError, ValueError, KeyError) as error:
                log.warning("ignoring unreadable cache entry %s (%s)", cache_path, error)
        info = video_info(path)
        frame_size = (info.width, info.height)
        batches = iter_frame_batches(path, self.settings.batch_size)
        if self.settings.backend == "mediapipe":
            vectors = self.backend.estimate_video(batches)
            result = SampleKeypoints(posefiles.mediapipe_to_49(vectors, frame_size), frame_size, info.fps)
        else:
            wholebody = self.backend.estimate_video(batches)
            if not np.any(wholebody[..., 2] > 0):
                raise SampleError("no person in any frame")
            result = SampleKeypoints(posefiles.wholebody_to_49(wholebody), frame_size, info.fps, wholebody)
        if cache_path is not None:
            _write_cached(cache_path, result)
        return result

    # -- any row --------------------------------------------------------------------------
    def extract(self, row: ManifestRow) -> SampleKeypoints:
        path = self.folder / row.path if self.folder is not None else Path(row.path)
        if row.kind == KIND_VIDEO:
            return self._video(path)
        frame_size, fps = self.dataset.frame_size, self.dataset.fps
        if not path.exists():
            raise SampleError("file not found")
        if row.kind == KIND_MMPOSE_JSON:
            wholebody = posefiles.load_mmpose_json(path)
            return SampleKeypoints(posefiles.wholebody_to_49(wholebody), frame_size, fps, wholebody)
        if row.kind == KIND_MP_FRAMES:
            vectors = posefiles.load_mp_frames(path)
        elif row.kind == KIND_MP_SEQUENCE:
            vectors = posefiles.load_mp_sequence(path)
        else:
            raise SampleError(f"unknown input kind {row.kind!r}")
        return SampleKeypoints(posefiles.mediapipe_to_49(vectors, frame_size), frame_size, fps)


def _write_cached(path: Path, result: SampleKeypoints) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    arrays = {"keypoints": result.keypoints, "frame_size": np.asarray(result.frame_size), "fps": np.asarray(result.fps)}
    if result.wholebody is not None:
        arrays["wholebody"] = result.wholebody
    with temporary.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)


def _read_cached(path: Path) -> SampleKeypoints:
    with np.load(path, allow_pickle=False) as data:
        width, height = (int(v) for v in data["frame_size"])
        wholebody = data["wholebody"] if "wholebody" in data.files else None
        return SampleKeypoints(data["keypoints"], (width, height), float(data["fps"]), wholebody)


# ---- writing ------------------------------------------------------------------------------
def _frame_specs(keep_wholebody: bool) -> dict:
    specs = {"keypoints": ((joints.NUM_JOINTS, 3), np.float32)}
    if keep_wholebody:
        specs["wholebody"] = ((joints.WHOLEBODY_NUM_POINTS, 3), np.float32)
    return specs


def _append(writer: RaggedWriter, row: ManifestRow, sample: SampleKeypoints, keep_wholebody: bool) -> None:
    frames = {"keypoints": sample.keypoints.astype(np.float32, copy=False)}
    extra = {}
    if keep_wholebody:
        has = sample.wholebody is not None
        frames["wholebody"] = sample.wholebody if has else np.zeros((len(sample.keypoints), joints.WHOLEBODY_NUM_POINTS, 3), np.float32)
        extra["has_wholebody"] = has
    writer.append(
        frames,
        sample_id=row.sample_id,
        path=row.path,
        kind=row.kind,
        gloss=row.gloss,
        label=row.label,
        signer=row.signer,
        split=row.split,
        frame_size=np.asarray(sample.frame_size, dtype=np.int64),
        fps=float(sample.fps),
        **extra,
    )


def _extract_attrs(settings: ExtractParams) -> dict:
    """The extract settings as stored in the file: weights by file name, since their folder
    differs between machines (the cache key holds their content)."""
    stored = settings.model_dump(mode="json")
    for key in ("pose_checkpoint", "det_checkpoint"):
        if stored[key] is not None:
            stored[key] = Path(stored[key]).name
    return stored


def _attrs(params: Params, dataset: DatasetParams, manifest: Manifest, shard: Shard | None) -> dict:
    return {
        "format": FILE_FORMAT,
        "glosses": manifest.glosses,
        # Not the root: where the dataset lies differs between clones; DVC tracks what it holds.
        "dataset": dataset.model_dump(mode="json", exclude={"root"}),
        "extract": _extract_attrs(params.extract),
        "shard": [shard.index, shard.count] if shard else [],
    }


def _extract_rows(extractor: Extractor, rows: list[ManifestRow], writer: RaggedWriter, keep_wholebody: bool) -> tuple[int, list[Problem]]:
    problems: list[Problem] = []
    frames = 0
    progress = tqdm(rows, desc="extract", unit="sample", dynamic_ncols=True)
    for row in progress:
        try:
            sample = extractor.extract(row)
        except SampleError as error:
            problem = str(error)
        except SlrpipeError:
            raise  # a setup problem (missing extra, bad checkpoint) stops the run: every sample would fail
        except Exception as error:  # noqa: BLE001 - one broken file must not end a long run
            log.debug("unexpected error on %s", row.sample_id, exc_info=True)
            problem = f"unexpected {type(error).__name__}: {error}"
        else:
            _append(writer, row, sample, keep_wholebody)
            frames += len(sample.keypoints)
            continue
        problems.append(Problem(row.sample_id, row.path, problem))
        log.warning("skipped %s: %s", row.sample_id, problem)
        progress.set_postfix(bad=len(problems))
    return frames, problems


def _drop_empty_glosses(manifest: Manifest, writer: RaggedWriter) -> tuple[Manifest, list[Problem]]:
    """Glosses none of whose samples was extracted leave the class list; the labels written so far
    and the manifest's are renumbered to match (rows of a dropped gloss keep no label, -1)."""
    glosses, new_label, dropped = drop_empty_classes(manifest.glosses, [row.label for row in manifest.rows], writer.values("label"))
    if not dropped:
        return manifest, []
    writer.remap_values("label", new_label)
    for problem in dropped:
        log.warning("%s", problem.problem)
    rows = [replace(row, label=new_label.get(row.label, -1)) for row in manifest.rows]
    return Manifest(rows, glosses, manifest.problems), dropped


def _write_tables(out_dir: Path, result: ExtractResult, report_name: str = REPORT_FILE) -> None:
    write_manifest_csv(result.manifest, out_dir / MANIFEST_FILE)
    write_glosses(out_dir / GLOSSES_FILE, result.manifest.glosses)
    write_report(out_dir / report_name, result.problems + result.dropped)


def _write_summary(out_dir: Path, result: ExtractResult) -> None:
    write_json(out_dir / SUMMARY_FILE, {
        "samples": result.total,
        "extracted": result.extracted,
        "bad": len(result.problems),
        "bad_fraction": round(result.bad_fraction, 6),
        "frames": result.frames,
        "classes": len(result.manifest.glosses),
    })


def _finish(out_dir: Path, result: ExtractResult, limit: float) -> None:
    _write_tables(out_dir, result)
    _write_summary(out_dir, result)
    check_bad_fraction(len(result.problems), result.total, limit, "extract.max_bad_fraction", out_dir / REPORT_FILE)


def run_extract(params: Params, out_dir: Path, cache_dir: Path | None, shard: Shard | None = None,
                name: str | None = None) -> ExtractResult:
    """Extract every sample (or one shard of them) of dataset `name` (None: the only one) into `out_dir`."""
    name = params.dataset_name(name)
    dataset = params.datasets[name]
    manifest = build_manifest(dataset, name)
    rows = shard.select(manifest.rows) if shard else manifest.rows
    # Problems found while reading the annotations belong to the shard that owns them too.
    source_problems = [p for i, p in enumerate(manifest.problems) if shard is None or i % shard.count == shard.index]
    keep_wholebody = params.extract.keep_wholebody
    extractor = Extractor(dataset, params.extract, cache_dir, dataset_folder(dataset))
    out_dir.mkdir(parents=True, exist_ok=True)
    for problem in source_problems:
        log.warning("skipped %s: %s", problem.sample_id, problem.problem)

    target = out_dir / SHARD_DIR / f"keypoints.{shard.tag}.h5" if shard else out_dir / KEYPOINTS_FILE
    with RaggedWriter(target, _frame_specs(keep_wholebody)) as writer:
        frames, problems = _extract_rows(extractor, rows, writer, keep_wholebody)
        # One shard cannot tell whether another holds a gloss's samples: merging decides.
        manifest, dropped = _drop_empty_glosses(manifest, writer) if shard is None else (manifest, [])
        writer.attrs.update(_attrs(params, dataset, manifest, shard))
        extracted = len(writer)
    result = ExtractResult(manifest, extracted, frames, sorted(source_problems + problems, key=lambda p: p.sample_id), dropped)
    if shard:
        write_report(out_dir / SHARD_DIR / f"extract_report.{shard.tag}.csv", result.problems)
        log.info("shard %s: %d extracted, %d bad; run `slrpipe extract-merge --shards %d` when all shards are done",
                 shard.tag, extracted, len(result.problems), shard.count)
        return result
    _finish(out_dir, result, params.extract.max_bad_fraction)
    return result


def merge_shards(params: Params, out_dir: Path, count: int, name: str | None = None) -> ExtractResult:
    """Join the files of `count` shards of dataset `name` into the stage's outputs, in manifest order."""
    name = params.dataset_name(name)
    dataset = params.datasets[name]
    manifest = build_manifest(dataset, name)
    keep_wholebody = params.extract.keep_wholebody
    shard_files = []
    problems: list[Problem] = []
    for index in range(count):
        shard = Shard(index, count)
        path = out_dir / SHARD_DIR / f"keypoints.{shard.tag}.h5"
        report = out_dir / SHARD_DIR / f"extract_report.{shard.tag}.csv"
        if not path.is_file() or not report.is_file():
            raise SlrpipeError(f"shard {index}/{count} has no output in {out_dir / SHARD_DIR}: run `slrpipe extract --shard {index}/{count}`")
        shard_file = RaggedFile(path)
        if shard_file.attr("glosses") != manifest.glosses or shard_file.attr("extract") != _extract_attrs(params.extract):
            raise SlrpipeError(f"{path} was made with other params or another dataset version: rerun that shard")
        shard_files.append(shard_file)
        problems.extend(read_report(report))

    located = {}
    for shard_file in shard_files:
        fps, sizes = shard_file.column("fps"), shard_file.column("frame_size")
        has_wholebody = shard_file.column("has_wholebody") if keep_wholebody else [False] * len(shard_file)
        for position, sample_id in enumerate(shard_file.column("sample_id")):
            located[sample_id] = (shard_file, position, float(fps[position]), tuple(int(v) for v in sizes[position]), bool(has_wholebody[position]))
    reported = {problem.sample_id for problem in problems}
    missing = [row.sample_id for row in manifest.rows if row.sample_id not in located and row.sample_id not in reported]
    if missing:
        raise SlrpipeError(f"{len(missing)} sample(s) are in no shard (first: {missing[0]}): the dataset changed since the shards ran; rerun them")

    frames = 0
    with RaggedWriter(out_dir / KEYPOINTS_FILE, _frame_specs(keep_wholebody)) as writer:
        for row in manifest.rows:
            if row.sample_id not in located:
                continue
            shard_file, position, fps, size, has_wholebody = located[row.sample_id]
            wholebody = shard_file.frames("wholebody", position) if has_wholebody else None
            sample = SampleKeypoints(shard_file.frames("keypoints", position), size, fps, wholebody)
            _append(writer, row, sample, keep_wholebody)
            frames += len(sample.keypoints)
        manifest, dropped = _drop_empty_glosses(manifest, writer)
        writer.attrs.update(_attrs(params, dataset, manifest, None))
        extracted = len(writer)
    for shard_file in shard_files:
        shard_file.close()
    result = ExtractResult(manifest, extracted, frames, sorted(problems, key=lambda p: p.sample_id), dropped)
    _finish(out_dir, result, params.extract.max_bad_fraction)
    return result
