"""Wall time of each stage of the demo pipeline.

Run by hand in a clone with the README's environment:  python bench/pipeline.py
Each stage is forced to run once, in pipeline order (`dvc repro --force --single-item STAGE`),
with the stages before it already done: extract@ and preprocess@ of every dataset, the corpus,
pretrain, then finetune@ and evaluate@ of every target, and the report. The training stages' resume checkpoints are deleted
first, or they would resume a finished run and train nothing. Results: bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

PRETRAIN_RESUME = Path("data/models/pretrain/checkpoint.pt")


def stages_and_resume_files() -> tuple[list[str], dict[str, Path]]:
    """The pipeline's stages for this clone's params.yaml, and the training stages' resume files."""
    from slrpipe.config import load_params

    params = load_params(Path("params.yaml"))
    stages = [f"{stage}@{name}" for stage in ("extract", "preprocess") for name in params.datasets]
    stages += ["corpus", "pretrain"]
    stages += [f"{stage}@{name}" for name in params.finetune.targets for stage in ("finetune", "evaluate")]
    resume = {"pretrain": PRETRAIN_RESUME} | {f"finetune@{name}": Path("data/models/finetune") / name / "last.pt"
                                              for name in params.finetune.targets}
    return stages + ["report"], resume


def main() -> None:
    # No options: --help only describes the run (which forces every stage of this clone's pipeline).
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    stages, resume_files = stages_and_resume_files()
    total = 0.0
    for stage in stages:
        if stage in resume_files:
            resume_files[stage].unlink(missing_ok=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"{stage:<20} {elapsed:7.1f} s", flush=True)
    print(f"{'total':<20} {total:7.1f} s")


if __name__ == "__main__":
    main()
