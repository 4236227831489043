"""Benchmark of `pretrain.threads`: one pretraining epoch of the `small` model on the CPU with
torch's default thread count, then with `threads: auto`, both with 2 loader workers.

Run by hand:  python bench/threads.py [--sessions 4] [--sequences 4] [--batch 64] [--repeat 1]

The dataset is a slice of the ksl13 recordings in shared/data (13 signs x sessions x
sequences, all in the training split), extracted and preprocessed once into a temporary
folder. Each setting runs `run_pretrain` for one epoch (the real loop: loader workers,
augmentation, both branches, every loss term) in a fresh process whose environment has no
OMP_NUM_THREADS, so "default" is what torch picks by itself. The machine's load average is
printed with each result, since other work on the cores changes the outcome. Results:
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KSL13 = REPO.parent / "shared" / "data" / "ksl13"
WORKERS = 2


def params_for(root: Path, batch: int, threads: int | str):
    """The project's params.yaml with this benchmark's dataset and pretraining settings over it."""
    from slrpipe.config import load_params, parse_params

    base = load_params(REPO / "params.yaml").model_dump(mode="json")
    overrides = {
        "preprocess": {"split": "random", "val_fraction": 0.0, "test_fraction": 0.0},
        "model": {"size": "small"},
        # Many epochs, one run: no kNN monitor and no lr drop inside the measured epoch.
        "pretrain": {"corpus": ["ksl"], "epochs": 100, "batch_size": batch, "num_workers": WORKERS, "threads": threads,
                     "device": "cpu", "knn_every": 100},
    }
    merged = {name: {**section, **overrides.get(name, {})} for name, section in base.items()}
    merged["datasets"] = {"ksl": {"source": "mp_data", "root": str(root)}}  # this benchmark's recordings alone
    merged["finetune"]["targets"] = ["ksl"]
    return parse_params(merged, REPO / "params.yaml")


def prepare(work: Path, sessions: int, sequences: int) -> Path:
    from slrpipe.pose.extract import run_extract
    from slrpipe.data.preprocess import run_preprocess

    root = work / "ksl"
    for session in sorted(path for path in KSL13.iterdir() if path.is_dir())[:sessions]:
        for sign in sorted(path for path in session.iterdir() if path.is_dir()):
            for sequence in range(sequences):
                shutil.copytree(sign / str(sequence), root / session.name / sign.name / str(sequence))
    params = params_for(root, 64, "auto")
    run_extract(params, work / "extract", None)
    run_preprocess(params, work / "extract" / "keypoints.h5", work / "pre")
    return work / "pre" / "dataset.h5"


def child(dataset: Path, root: Path, batch: int, mode: str) -> None:
    import torch

    from slrpipe.pretrain.train import run_pretrain

    default = torch.get_num_threads()
    params = params_for(root, batch, "auto" if mode == "auto" else default)
    chosen = []
    real = torch.set_num_threads
    torch.set_num_threads = lambda n: (chosen.append(n), real(n))  # the count the loop ran with
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = run_pretrain(params, dataset, Path(out), None, resume=False, epochs=1)
        wall = time.perf_counter() - started
    print(json.dumps({"mode": mode, "threads": chosen[0], "torch_default": default, "wall_s": wall,
                      "samples_per_second": result.last_metrics["samples_per_second"],
                      "load_average_1min": os.getloadavg()[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", choices=("default", "auto"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.dataset, args.root, args.batch, args.child)
        return

    work = Path(tempfile.mkdtemp(prefix="slrpipe-threads-"))
    try:
        dataset = prepare(work, args.sessions, args.sequences)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {WORKERS} loader workers; "
              f"batch {args.batch}; load average before: {os.getloadavg()[0]:.2f}")
        for _ in range(args.repeat):
            for mode in ("default", "auto"):
                output = subprocess.run([sys.executable, __file__, "--child", mode, "--dataset", str(dataset),
                                         "--root", str(work / "ksl"), "--batch", str(args.batch)],
                                        env=env, check=True, capture_output=True, text=True).stdout
                row = json.loads(output.strip().splitlines()[-1])
                print(f"{row['mode']:<8} torch threads {row['threads']} (torch default {row['torch_default']}): "
                      f"epoch {row['wall_s']:6.1f} s, {row['samples_per_second']:6.1f} samples/s, "
                      f"load average {row['load_average_1min']:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
