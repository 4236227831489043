"""The `baseline` stage: the logistic-regression baseline (slrpipe.model.baseline) fitted on the
training split, as the fine-tuned model is, and scored on the same test split with the same
metrics and bootstrap intervals, so results.md can put the two side by side.

It reads no pretraining or fine-tuning output, so it reruns only when the data or its own code
change. Its metrics are named `baseline/test/...` (the split they were measured on) and
`baseline/selected/...` (C and the validation top-1 that chose it), so `dvc exp show` keeps them
apart from the deep model's `test/...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slrpipe.config import Params
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.frames import resolve_frames
from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.evaluate import SPLIT, nested, signers_of, subsets_of, scored_metrics, with_intervals
from slrpipe.evaluation.metrics import write_scores_csv
from slrpipe.finetune.baseline import fit_baseline
from slrpipe.h5io import write_json
from slrpipe.model.baseline import score_baseline

SCORES_FILE = "scores.csv"
METRICS_FILE = "metrics.json"
PREFIX = "baseline"


@dataclass
class BaselineResult:
    metrics: dict[str, float]  # "test/per_instance/top1" -> value
    intervals: dict[str, float]
    samples: int
    C: float


def run_baseline(params: Params, dataset_path: Path, out_dir: Path, name: str | None = None) -> BaselineResult:
    """Fit the baseline on dataset `name` (None: the only one), preprocessed into `dataset_path`
    (C chosen on validation), score its test split, write scores.csv and metrics.json."""
    source = params.datasets[params.dataset_name(name)].source
    fit = fit_baseline(params, dataset_path)
    test = PoseDataset(dataset_path, resolve_frames(params.augment, dataset_path), "eval", split="test")
    if len(test) == 0:
        raise SlrpipeError(f"{dataset_path} has no test samples: check preprocess.test_fraction or the dataset's split")
    scores, labels = score_baseline(fit.model, test)
    ks = [k for k in params.evaluate.topk if k <= len(fit.glosses)]
    signers = signers_of(dataset_path, test.indices)
    metrics, intervals = scored_metrics(params.evaluate, scores, labels, ks, subsets_of(source, fit.glosses, labels),
                                      signers)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores_csv(out_dir / SCORES_FILE, test.sample_ids, labels, scores, fit.glosses)
    tree = nested(with_intervals(metrics, intervals))
    tree[SPLIT]["samples"] = len(test)
    if signers is not None:
        tree[SPLIT]["signers"] = len(set(signers))
    selected = {"C": fit.C, **({"val": {"top1": round(fit.val_top1, 6)}} if fit.val_top1 is not None else {})}
    write_json(out_dir / METRICS_FILE, {PREFIX: {**tree, "selected": selected}})
    return BaselineResult(metrics, intervals, len(test), fit.C)
