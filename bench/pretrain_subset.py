"""Pretraining on a small ksl13 subset, one configuration per run: the contrastive loss of each
branch as a fraction of chance and the validation kNN after every epoch (issue 15's search for
why the loss stayed near chance, and the guard test's settings).

    PYTHONPATH=$PWD python bench/pretrain_subset.py NAME '{"augment": {"pretrain": {"joint_mask_probability": 0}}}'

The JSON overrides params.yaml section by section; "words" (default: bad, glad, no, yes) and
"sequences" (per word and session, default 10) choose the subset of ../shared/data/ksl13,
which is extracted and preprocessed once under /tmp/slrpipe-bench-subsets.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from slrpipe.config import parse_params  # noqa: E402
from slrpipe.engine import loop  # noqa: E402
from slrpipe.pretrain.train import KNN_METRIC, run_pretrain  # noqa: E402
from tests.conftest import build_ksl_dataset  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print(__doc__)
        return
    name, overrides = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    words = tuple(overrides.pop("words", ["bad", "glad", "no", "yes"]))
    sequences = overrides.pop("sequences", 10)
    base = Path("/tmp/slrpipe-bench-subsets") / ("_".join(w.replace(" ", "").replace("'", "") for w in words) + f"_{sequences}")
    dataset = base / "pre" / "dataset.h5"
    if not dataset.exists():
        base.mkdir(parents=True, exist_ok=True)
        build_ksl_dataset(REPO.parent / "shared" / "data", base, words, sequences)
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["datasets"] = {"ksl": {"source": "mp_data", "root": str(base / "ksl")}}  # this subset alone
    defaults = {"finetune": {"targets": ["ksl"]}, "augment": {"frames": 16},
                "pretrain": {"corpus": ["ksl"], "epochs": 20, "batch_size": 16, "bank_size": 64, "part_bank_size": 32, "transfer_top_k": 32,
                             "num_workers": 0, "threads": 2, "knn_every": 5, "lr_steps": [], "device": "cpu"}}
    for section in (defaults, overrides):
        for key, values in section.items():
            raw.setdefault(key, {}).update(values)
    params = parse_params(raw, REPO / "params.yaml")
    epochs, started = [], time.perf_counter()
    original = loop.log_epoch
    loop.log_epoch = lambda live, metrics: (epochs.append({**metrics, "seconds": time.perf_counter() - started}),
                                            original(live, metrics))
    run_pretrain(params, dataset, Path("/tmp/slrpipe-bench-subsets/out") / name, None, resume=False)
    chance = params.pretrain.contrast_chance
    for number, metrics in enumerate(epochs, 1):
        knn = metrics.get(KNN_METRIC)
        print(f"{name} epoch {number:3d} {metrics['seconds']:6.0f} s  contrast/chance joint "
              f"{metrics['train/loss/contrast_joint'] / chance:.2f} motion {metrics['train/loss/contrast_motion'] / chance:.2f}"
              f"  val kNN {'' if knn is None else f'{knn:.3f}'}")
    print(f"chance {chance:.2f} = {chance / math.log(params.pretrain.bank_size + 1):.0f} x ln({params.pretrain.bank_size} + 1)")


if __name__ == "__main__":
    main()
