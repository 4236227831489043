"""Benchmark of the pretraining loader: samples per second and peak memory.

Run by hand:  python bench/loader.py [--dataset data/preprocess/ksl13/dataset.h5] [--batches 40]

Two views per sample, joint + motion per part, batch 64, as pretraining consumes them; with
the work in the main process on one core (num_workers 0, one torch thread) and in two worker
processes. Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from slrpipe.config import load_params
from slrpipe.data.dataset import PoseDataset


def peak_rss_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def measure(dataset: PoseDataset, workers: int, batches: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0)
    samples, start, epoch = 0, None, 0
    while samples < batches * batch_size:
        dataset.set_epoch(epoch)
        for batch in loader:
            if start is None:  # the first batch pays for worker start-up; not counted
                start = time.perf_counter()
                continue
            samples += len(batch["label"])
            if samples >= batches * batch_size:
                break
        epoch += 1
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("data/preprocess/ksl13/dataset.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = load_params(args.params).augment
    dataset = PoseDataset(args.dataset, settings, "pretrain")
    print(f"{args.dataset}: {len(dataset)} samples, T'={settings.frames}, batch {args.batch_size}")
    for workers in (0, 2):
        rate = measure(dataset, workers, args.batches, args.batch_size)
        label = "1 core (main process)" if workers == 0 else f"{workers} worker processes"
        print(f"{label:<26} {rate:8.0f} samples/s")
    own, children = peak_rss_mib()
    print(f"peak RSS: main process {own:.0f} MiB, largest worker {children:.0f} MiB")


if __name__ == "__main__":
    main()
