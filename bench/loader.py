"""Benchmark of the pretraining loader: samples per second per number of worker processes,
against what the training step consumes, and peak memory.

Run by hand:  python bench/loader.py [--dataset data/preprocess/ksl13/dataset.h5] [--workers 0 1 2]
                                     [--batches 40] [--step-json step.json | --step-rate 1000]

Two views per sample, joint + motion per part, batch 64, as pretraining consumes them: one
long shuffled pass (samples drawn again once the dataset is used up, so a small dataset
still keeps every worker busy), the first batch (worker start-up) not counted. Workers 0 = the
main process on one core. `--step-json` reads the step's samples/s written by
bench/pretrain_step.py --json (or `--step-rate` gives it) and says how many workers keep up.
Results are written down in bench/RESULTS.md (CPU) and bench/RESULTS-gpu.md (bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from slrpipe.config import load_params
from slrpipe.data.dataset import PoseDataset


def peak_rss_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(dataset: PoseDataset, workers: int, batches: int, batch_size: int) -> tuple[float, float]:
    """(samples per second of wall time over `batches` batches after the first, samples per
    CPU-second of the process(es) making them).

    The second is what a core gives when nothing else runs on it: on a shared machine the wall
    rate measures the other load as much as the loader. It counts the workers' whole lives
    (start-up and the first batch too), so it errs low."""
    sampler = RandomSampler(dataset, num_samples=(batches + 1) * batch_size, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True)
    who = resource.RUSAGE_CHILDREN if workers else resource.RUSAGE_SELF
    cpu_before = cpu_seconds(who)
    samples, start = 0, None
    for batch in loader:
        if start is None:  # the first batch pays for worker start-up; not counted
            start = time.perf_counter()
            if not workers:
                cpu_before = cpu_seconds(who)
            continue
        samples += len(batch["label"])
    wall = time.perf_counter() - start
    del loader  # the workers have exited (the pass ended): their CPU time is now counted among the children
    counted = samples + (batch_size if workers else 0)
    return samples / wall, counted / max(cpu_seconds(who) - cpu_before, 1e-9)


def step_rate(args: argparse.Namespace) -> tuple[float, str] | None:
    if args.step_json is not None:
        step = json.loads(args.step_json.read_text())
        label = f"{step['size']} step, batch {step['batch']}, {step['device']}{' bf16' if step['bf16'] else ''}" \
                f"{' compiled' if step['compile'] else ''}"
        return step["samples_per_second"], label
    if args.step_rate is not None:
        return args.step_rate, "given step rate"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("data/preprocess/ksl13/dataset.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=40, help="per measurement; at least 8 per worker are run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--step-json", type=Path, help="bench/pretrain_step.py --json output: the rate to keep up with")
    parser.add_argument("--step-rate", type=float, help="samples/s the training step consumes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = load_params(args.params).augment
    dataset = PoseDataset(args.dataset, settings, "pretrain")
    print(f"{args.dataset}: {len(dataset)} samples, T'={settings.frames}, batch {args.batch_size}")
    print(f"{'':<26} {'wall samples/s':>15} {'samples per CPU-second':>23}")
    rates, per_cpu = {}, {}
    for workers in args.workers:
        rates[workers], per_cpu[workers] = measure(dataset, workers, max(args.batches, 8 * workers), args.batch_size)
        label = "main process (1 core)" if workers == 0 else f"{workers} worker processes"
        print(f"{label:<26} {rates[workers]:15.0f} {per_cpu[workers]:23.0f}", flush=True)
    own, children = peak_rss_mib()
    print(f"peak RSS: main process {own:.0f} MiB, largest worker {children:.0f} MiB")
    consumer = step_rate(args)
    if consumer is not None:
        rate, label = consumer
        print(f"the training step consumes {rate:.0f} samples/s ({label})")
        for workers, produced in rates.items():
            verdict = "keeps up" if produced >= rate else f"{100 * produced / rate:.0f} % of it"
            print(f"  {workers} workers (measured wall rate): {verdict}")
        core = min(per_cpu.values())
        print(f"  workers needed, one core each, at the lowest measured {core:.0f} samples per CPU-second: "
              f"{math.ceil(rate / core)} (a projection: it assumes that many free cores)")


if __name__ == "__main__":
    main()
