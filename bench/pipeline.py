"""Wall time of each stage of the demo pipeline.

Run by hand in a clone with the README's environment:  python bench/pipeline.py
Each stage is forced to run once, in pipeline order (`dvc repro --force --single-item STAGE`),
with the stages before it already done. The training stages' resume checkpoints are deleted
first, or they would resume a finished run and train nothing. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("extract", "preprocess", "pretrain", "finetune", "evaluate", "report")
RESUME_FILES = {"pretrain": Path("data/models/pretrain/checkpoint.pt"), "finetune": Path("data/models/finetune/last.pt")}


def main() -> None:
    # No options: --help only describes the run (which forces every stage of this clone's pipeline).
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    total = 0.0
    for stage in STAGES:
        if stage in RESUME_FILES:
            RESUME_FILES[stage].unlink(missing_ok=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"{stage:<12} {elapsed:7.1f} s", flush=True)
    print(f"{'total':<12} {total:7.1f} s")


if __name__ == "__main__":
    main()
