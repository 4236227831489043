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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from slrpipe.config import Params
from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.compare import compare_scores
from slrpipe.evaluation.report.figures import BRANCHES, CURVES_PNG, TSNE_PNG, plot_curves, plot_tsne
from slrpipe.evaluation.report.render import markdown_table, missing_why, render_page, render_target
from slrpipe.evaluation.report.tables import Inputs, accuracies, compare, dataset_label, paper_results, results_csv
from slrpipe.h5io import write_text_atomic

__all__ = ["Inputs", "TargetDirs", "markdown_table", "read_inputs", "run_report", "run_reports"]
log = logging.getLogger(__name__)
PER_CLASS = "per_class.csv"
PER_SIGNER = "per_signer.csv"
SCORES = "scores.csv"
T = TypeVar("T")


def _read(path: Path, stage: str, parse: Callable[[Path], T]) -> T:
    """`parse(path)`, with a missing or unreadable file as one error that names it and the stage to rerun."""
    if not path.is_file():
        raise SlrpipeError(f"{path} not found: run `dvc repro {stage}` first")
    try:
        return parse(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise SlrpipeError(f"{path}: {error}: rerun `dvc repro {stage}`") from None


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("should hold a JSON object")
    return data


def _metrics(path: Path) -> dict:
    """The test-split metrics (metrics.json's "test"), with how the evaluated model was selected
    ("selected") when recorded."""
    whole = _json_object(path)
    metrics = whole.get("test")
    top = metrics.get("per_instance") if isinstance(metrics, dict) else None
    if not isinstance(top, dict) or "top1" not in top:
        raise ValueError("has no test/per_instance/top1 accuracy")
    return {**metrics, "selected": whole["selected"]} if "selected" in whole else metrics


def _csv(path: Path, columns: set[str]) -> pd.DataFrame:
    try:  # as text: a gloss or signer such as "null" or "NA" stays a name
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    missing = columns - set(table.columns)
    if missing:
        raise ValueError(f"lacks the column(s) {', '.join(sorted(missing))}")
    return table


def _signer_table(path: Path) -> pd.DataFrame:
    """per_signer.csv: signer, samples, top1; no rows when the test samples have no signer ids."""
    table = _csv(path, {"signer", "samples", "top1"})
    try:
        return table.assign(top1=pd.to_numeric(table.top1)).astype({"samples": int})
    except ValueError:
        raise ValueError("a sample count or accuracy is not a number") from None


def _table(path: Path) -> pd.DataFrame:
    table = _csv(path, {"label", "gloss", "samples", "top1"})
    try:
        tops = {c: pd.to_numeric(table[c].where(table[c] != "")) for c in table if c.startswith("top")}
        return table.assign(**tops).astype({"label": int, "samples": int})
    except ValueError:
        raise ValueError("a label, sample count or accuracy is not a number") from None


def _embeddings(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(path) as data:
        if "labels" not in data:
            raise ValueError("has no labels array")
        labels = np.asarray(data["labels"]).astype(np.int64)
        features = {b: np.asarray(data[b], dtype=np.float64) for b in BRANCHES if b in data}
    for branch, values in features.items():
        if values.ndim != 2 or len(values) != len(labels):
            raise ValueError(f"{branch} features of shape {values.shape} do not fit {len(labels)} labels")
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
    metrics, per_class = _read(eval_dir / "metrics.json", "evaluate", _metrics), _read(eval_dir / PER_CLASS, "evaluate", _table)
    labels, embeddings = _read(eval_dir / "embeddings.npz", "evaluate", _embeddings)
    per_signer = _read(eval_dir / PER_SIGNER, "evaluate", _signer_table)
    summary = _read(preprocess_dir / "preprocess_summary.json", "preprocess", _json_object)
    subsets, glosses = preprocess_dir / "label_subsets.json", preprocess_dir / "glosses.txt"  # line i: label i
    curves = {stage: read_curves(live_dir) for stage, live_dir in live_dirs.items()}
    return Inputs(metrics, per_class, embeddings, labels, summary,
                  _read(subsets, "preprocess", _json_object) if subsets.is_file() else None,
                  glosses.read_text(encoding="utf-8").splitlines() if glosses.is_file() else None,
                  {stage: found for stage, found in curves.items() if found},
                  {stage: live_dirs[stage] / "plots" / "metrics" for stage, found in curves.items() if not found},
                  per_signer)


def _baseline_metrics(path: Path) -> dict:
    """The baseline stage's test metrics (metrics.json's "baseline" -> "test"), with "selected" (its C)."""
    whole = _json_object(path).get("baseline")
    metrics = whole.get("test") if isinstance(whole, dict) else None
    top = metrics.get("per_instance") if isinstance(metrics, dict) else None
    if not isinstance(top, dict) or "top1" not in top:
        raise ValueError("has no baseline/test/per_instance/top1 accuracy")
    return {**metrics, "selected": whole["selected"]} if "selected" in whole else metrics


@dataclass(frozen=True)
class TargetDirs:
    """Where one target's evaluate, preprocess, baseline and dvclive outputs are."""

    eval_dir: Path
    preprocess_dir: Path
    live_dirs: dict[str, Path]  # "pretrain" / "finetune" -> a dvclive folder
    baseline_dir: Path | None = None  # the baseline stage's folder; None: no baseline row


def paired_comparisons(params: Params, name: str, dirs: TargetDirs) -> dict:
    """name -> this run's top-1 minus that model's on the same test samples: the baseline's and the
    reference run's (`report.reference_scores`), with intervals over signers when dataset.h5 names them."""
    others = {}
    if dirs.baseline_dir is not None:
        others["the baseline"] = (dirs.baseline_dir / SCORES, "baseline")
    if (reference := params.report.reference_file(name)) is not None:
        others[params.report.reference_name] = (reference, None)
    if not others:
        return {}
    ours = dirs.eval_dir / SCORES
    _read(ours, "evaluate", lambda path: path)
    e = params.evaluate
    draws = e.bootstrap_draws or 2000  # 0 turns the intervals of the table off, not this comparison's
    return {other: compare_scores(ours, _read(path, stage, lambda found: found) if stage else _reference(path),
                                  dirs.preprocess_dir / "dataset.h5", draws, e.bootstrap_seed)
            for other, (path, stage) in others.items()}


def _reference(path: Path) -> Path:
    if not path.is_file():
        raise SlrpipeError(f"report.reference_scores: {path} not found (a run's reports/eval/<target>/scores.csv; README, "
                           "\"Pretraining helps by X\")")
    return path


def _target(params: Params, name: str, dirs: TargetDirs, out_dir: Path, figures: str) -> tuple[str, pd.DataFrame]:
    """One target's sections and results.csv rows; its figures go to `out_dir/figures/` (named `figures`/...).
    The baseline row is left out when this run is the baseline itself."""
    inputs = read_inputs(dirs.eval_dir, dirs.preprocess_dir, dirs.live_dirs)
    if params.finetune.protocol == "baseline":
        dirs = replace(dirs, baseline_dir=None)
    baseline = _read(dirs.baseline_dir / "metrics.json", "baseline", _baseline_metrics) if dirs.baseline_dir is not None else None
    paired = paired_comparisons(params, name, dirs)
    acc = accuracies(inputs.metrics)
    baseline_acc = accuracies(baseline) if baseline is not None else None
    comparison = compare(params, acc, paper_results(), baseline_acc)
    missing = missing_why(params, inputs.missing_curves)
    names = dict(enumerate(inputs.glosses or [])) | dict(zip(inputs.per_class.label.tolist(), inputs.per_class.gloss))
    tsne, curves = (f"{figures}/{Path(figure).name}" for figure in (TSNE_PNG, CURVES_PNG))
    why = {tsne: plot_tsne(out_dir / tsne, inputs.embeddings, inputs.labels, names),
           curves: None if inputs.curves else "neither pretraining nor fine-tuning curves were found"}
    if inputs.curves:
        schedules = (("pretrain", params.pretrain),) + ((("finetune", params.finetune.schedule),)
                                                        if params.finetune.protocol != "baseline" else ())
        drops = {stage: [m for m in s.lr_steps if 0 < m < s.epochs] for stage, s in schedules}
        plot_curves(out_dir / curves, inputs.curves, missing, drops, params.pretrain.contrast_chance)
    for figure, reason in why.items():
        if reason is not None:  # no stale figure from an earlier run next to this report
            (out_dir / figure).unlink(missing_ok=True)
    link = Path(os.path.relpath(dirs.eval_dir / PER_CLASS, out_dir)).as_posix()
    return (render_target(params, inputs, acc, comparison, why, missing, link, baseline, paired),
            results_csv(params, acc, comparison, baseline_acc))


def run_report(params: Params, eval_dir: Path, preprocess_dir: Path, live_dirs: dict[str, Path], out_dir: Path,
               baseline_dir: Path | None = None, corpus: dict | None = None) -> Path:
    """results.md for the only target (params with one dataset): see run_reports."""
    dirs = TargetDirs(eval_dir, preprocess_dir, live_dirs, baseline_dir)
    return run_reports(params, {params.dataset_name(): dirs}, corpus, out_dir)


def run_reports(params: Params, targets: dict[str, TargetDirs], corpus: dict | None, out_dir: Path) -> Path:
    """Write results.md (the pretraining corpus, then a section per target), results.csv (every
    target's rows) and the figures (figures/, or figures/<target>/ with several) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, tables = {}, []
    for name, dirs in targets.items():
        focused = params.model_copy(update={"datasets": {name: params.datasets[name]}})
        text, table = _target(focused, name, dirs, out_dir, "figures" if len(targets) == 1 else f"figures/{name}")
        sections[dataset_label(focused)] = text
        tables.append(table)
    path = out_dir / "results.md"
    write_text_atomic(path, render_page(params, sections, corpus))
    write_text_atomic(out_dir / "results.csv", pd.concat(tables).to_csv(index=False, lineterminator="\n"))
    return path
