"""The `report` stage: this run's results on one page (results.md), beside the paper's published
numbers when the dataset is one of the paper's; results.csv (tidy rows `source,method,dataset,
metric,value`, percent as the paper prints them); a t-SNE of the test embeddings (the paper's Fig. 3)
and the training curves. It reads what the evaluate and preprocess stages and dvclive wrote (missing
curves are reported, not fatal). `tables` computes the numbers, `figures` draws, `render` writes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from slrpipe.config import Params
from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.report.figures import BRANCHES, CURVES_PNG, TSNE_PNG, plot_curves, plot_tsne
from slrpipe.evaluation.report.render import markdown_table, missing_why, render_markdown
from slrpipe.evaluation.report.tables import Inputs, accuracies, compare, paper_results, results_csv
from slrpipe.h5io import write_text_atomic

__all__ = ["Inputs", "markdown_table", "read_inputs", "run_report"]
log = logging.getLogger(__name__)
PER_CLASS_FILE = "per_class.csv"


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise SlrpipeError(f"{path} not found: run `dvc repro {stage}` first")
    return path


def _read_json(path: Path, stage: str) -> dict:
    try:
        data = json.loads(_need(path, stage).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SlrpipeError(f"{path} is not valid JSON ({error}): rerun `dvc repro {stage}`") from None
    if not isinstance(data, dict):
        raise SlrpipeError(f"{path} should hold a JSON object: rerun `dvc repro {stage}`")
    return data


def read_metrics(path: Path) -> dict:
    """The evaluate stage's test-split metrics (the "test" part of metrics.json), with how the
    evaluated model was selected (its "selected" part) when recorded."""
    whole = _read_json(path, "evaluate")
    metrics = whole.get("test")
    top = metrics.get("per_instance") if isinstance(metrics, dict) else None
    if not isinstance(top, dict) or "top1" not in top:
        raise SlrpipeError(f"{path} has no test/per_instance/top1 accuracy: rerun `dvc repro evaluate`")
    return {**metrics, "selected": whole["selected"]} if "selected" in whole else metrics


def read_per_class(path: Path) -> pd.DataFrame:
    try:  # as text: a gloss such as "null" or "NA" stays a gloss
        table = pd.read_csv(_need(path, "evaluate"), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    missing = {"label", "gloss", "samples", "top1"} - set(table.columns)
    if missing:
        raise SlrpipeError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: rerun `dvc repro evaluate`")
    try:
        tops = {c: pd.to_numeric(table[c].where(table[c] != "")) for c in table if c.startswith("top")}
        return table.assign(**tops).astype({"label": int, "samples": int})
    except ValueError:
        raise SlrpipeError(f"{path}: a label, sample count or accuracy is not a number: rerun `dvc repro evaluate`") from None


def read_embeddings(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(_need(path, "evaluate")) as data:
        if "labels" not in data:
            raise SlrpipeError(f"{path} has no labels array: rerun `dvc repro evaluate`")
        labels = np.asarray(data["labels"]).astype(np.int64)
        features = {b: np.asarray(data[b], dtype=np.float64) for b in BRANCHES if b in data}
    if not features:
        raise SlrpipeError(f"{path} holds neither joint nor motion features: rerun `dvc repro evaluate`")
    for branch, values in features.items():
        if values.ndim != 2 or len(values) != len(labels):
            raise SlrpipeError(f"{path}: {branch} features of shape {values.shape} do not fit {len(labels)} labels")
    return labels, features


def read_curves(live_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """dvclive's `plots/metrics/**/*.tsv` of one stage: name ('train/loss/total') -> (steps, values)."""
    root = live_dir / "plots" / "metrics"
    curves = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        try:  # the step column and the value column, the last other one
            table = pd.read_csv(path, sep="\t")
            steps, values = table.pop("step").to_numpy(np.float64), table.iloc[:, -1].to_numpy(np.float64)
        except (KeyError, IndexError, ValueError) as error:
            log.warning("%s: unreadable (%s), left out of the curves", path, error)
            continue
        if len(steps):
            curves[path.relative_to(root).with_suffix("").as_posix()] = (steps, values)
    return curves


def read_inputs(eval_dir: Path, preprocess_dir: Path, live_dirs: dict[str, Path]) -> Inputs:
    metrics, per_class = read_metrics(eval_dir / "metrics.json"), read_per_class(eval_dir / PER_CLASS_FILE)
    labels, embeddings = read_embeddings(eval_dir / "embeddings.npz")
    summary = _read_json(preprocess_dir / "preprocess_summary.json", "preprocess")
    subsets, glosses = preprocess_dir / "label_subsets.json", preprocess_dir / "glosses.txt"  # line i: label i
    curves = {stage: read_curves(live_dir) for stage, live_dir in live_dirs.items()}
    return Inputs(metrics, per_class, embeddings, labels, summary,
                  _read_json(subsets, "preprocess") if subsets.is_file() else None,
                  glosses.read_text(encoding="utf-8").splitlines() if glosses.is_file() else None,
                  {stage: found for stage, found in curves.items() if found},
                  {stage: live_dirs[stage] / "plots" / "metrics" for stage, found in curves.items() if not found})


def run_report(params: Params, eval_dir: Path, preprocess_dir: Path, live_dirs: dict[str, Path], out_dir: Path) -> Path:
    """Write results.md, results.csv and the figures into `out_dir`; returns the results.md path."""
    inputs = read_inputs(eval_dir, preprocess_dir, live_dirs)
    acc = accuracies(inputs.metrics)
    comparison = compare(params, acc, paper_results())
    missing = missing_why(params, inputs.missing_curves)
    names = dict(enumerate(inputs.glosses or [])) | dict(zip(inputs.per_class.label.tolist(), inputs.per_class.gloss))
    why = {TSNE_PNG: plot_tsne(out_dir / TSNE_PNG, inputs.embeddings, inputs.labels, names),
           CURVES_PNG: None if inputs.curves else "neither pretraining nor fine-tuning curves were found"}
    if inputs.curves:
        drops = {stage: [m for m in s.lr_steps if 0 < m < s.epochs]
                 for stage, s in (("pretrain", params.pretrain), ("finetune", params.finetune.schedule))}
        plot_curves(out_dir / CURVES_PNG, inputs.curves, missing, drops, params.pretrain.contrast_chance)
    for figure, reason in why.items():
        if reason is not None:  # no stale figure from an earlier run next to this report
            (out_dir / figure).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    link = Path(os.path.relpath(eval_dir / PER_CLASS_FILE, out_dir)).as_posix()
    path = out_dir / "results.md"
    write_text_atomic(path, render_markdown(params, inputs, acc, comparison, why, missing, link))
    write_text_atomic(out_dir / "results.csv", results_csv(params, acc, comparison).to_csv(index=False, lineterminator="\n"))
    return path
