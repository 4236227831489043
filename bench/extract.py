"""Benchmark of the extract stage: frames per second of each path.

Run by hand (not in tests):  python bench/extract.py [--mmpose-frames 32] [--devices cpu cuda] [--json out.json]

Measures
- importers: MediaPipe MP_Data frame folders (all of shared ksl13), MMPose JSON (shared fixtures)
- MediaPipe Holistic on the three real clips (CPU)
- MMPose top-down whole-body inference with a randomly initialised RTMPose-t model on SOUP.mp4
  (on noise frames where the shared fixtures are missing), for several batch sizes, on the CPU and
  on a GPU when one is present
and prints one line per measurement. Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from slrpipe.pose import posefiles
from slrpipe.config import parse_params
from slrpipe.pose.sources import build_manifest
from slrpipe.pose.video import iter_frame_batches, video_info

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _report(results: list[dict], name: str, frames: int, seconds: float, **extra) -> None:
    entry = {"name": name, "frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1), **extra}
    results.append(entry)
    print(f"{name:<48} {frames:>7} frames {seconds:>8.2f} s {entry['fps']:>9.1f} frames/s", flush=True)


def bench_importers(results: list[dict]) -> None:
    params = parse_params({"datasets": {"ksl13": {"source": "mp_data", "root": str(SHARED / "ksl13")}},
                           "pretrain": {"corpus": ["ksl13"]}, "finetune": {"targets": ["ksl13"]}})
    manifest = build_manifest(params.dataset("ksl13"), "ksl13")
    start, frames = time.perf_counter(), 0
    for row in manifest.rows:
        frames += len(posefiles.mediapipe_to_49(posefiles.load_mp_frames(Path(row.path)), (640, 480)))
    _report(results, f"import mp_data frame folders ({len(manifest)} seqs)", frames, time.perf_counter() - start)

    start, frames = time.perf_counter(), 0
    for _ in range(5):
        for name in ("SOUP", "FOOTBALL"):
            frames += len(posefiles.wholebody_to_49(posefiles.load_mmpose_json(SHARED / "mmpose_wholebody" / f"{name}.json")))
    _report(results, "import mmpose_json (2 files x 5)", frames, time.perf_counter() - start)


def bench_mediapipe(results: list[dict]) -> None:
    try:
        from slrpipe.pose.backends.mediapipe_backend import MediaPipeEstimator
    except ImportError as error:
        print(f"mediapipe: skipped ({error})")
        return
    estimator = MediaPipeEstimator()
    for name in ("SOUP", "FOOTBALL", "test_video"):
        path = SHARED / "videos" / f"{name}.mp4"
        info = video_info(path)
        start = time.perf_counter()
        vectors = estimator.estimate_video(iter_frame_batches(path, 16))
        _report(results, f"mediapipe holistic {name} {info.width}x{info.height}", len(vectors), time.perf_counter() - start)


def bench_mmpose(results: list[dict], frames: int, devices: list[str], batch_sizes: list[int]) -> None:
    try:
        from slrpipe.pose.backends.mmpose_backend import RTMPOSE_T_WHOLEBODY, MMPoseEstimator
    except ImportError as error:
        print(f"mmpose: skipped ({error})")
        return
    path = SHARED / "videos" / "SOUP.mp4"
    if path.is_file():
        clip = np.concatenate(list(iter_frame_batches(path, 64)))[:frames]
    else:  # a copy of the repository alone (a GPU machine): random weights see noise as well as a signer
        print(f"mmpose: {path} not found; timing {frames} frames of 640x480 noise instead")
        clip = np.random.default_rng(0).integers(0, 256, (frames, 480, 640, 3), dtype=np.uint8)
    for device in devices:
        for batch_size in batch_sizes:
            estimator = MMPoseEstimator(RTMPOSE_T_WHOLEBODY, None, device=device, batch_size=batch_size)
            estimator.estimate(clip[:batch_size])  # warm-up: first call builds kernels / caches
            start = time.perf_counter()
            estimator.estimate(clip)
            _report(results, f"mmpose rtmpose-t random {device} batch {batch_size}", len(clip), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mmpose-frames", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--only", choices=["importers", "mediapipe", "mmpose"], nargs="+")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], help="MMPose devices (default: cpu, and cuda when present)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    results: list[dict] = []
    wanted = set(args.only or ["importers", "mediapipe", "mmpose"])
    if "importers" in wanted:
        bench_importers(results)
    if "mediapipe" in wanted:
        bench_mediapipe(results)
    if "mmpose" in wanted:
        devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        bench_mmpose(results, args.mmpose_frames, devices, args.batch_sizes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
