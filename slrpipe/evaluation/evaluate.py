"""The `evaluate` stage: score every test sample with the fine-tuned model and compute the
paper's metrics, per instance (P-I) and per class (P-C), with optional late fusion (+R)."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slrpipe.config import AugmentParams, EvaluateParams, Params
from slrpipe.data.dataset import PoseDataset
from slrpipe.errors import SlrpipeError
from slrpipe.model.classifier import load_model, score_dataset
from slrpipe.h5io import RaggedFile, write_json, write_text_atomic
from slrpipe.evaluation.metrics import (evaluate, fuse, per_class_table, per_signer_table, read_scores_csv, top1_intervals,
                                        write_scores_csv)
from slrpipe.engine.runtime import resolve_device

log = logging.getLogger(__name__)

SCORES_FILE = "scores.csv"
METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CONFUSION_FILE = "confusion.csv"
PER_SIGNER_FILE = "per_signer.csv"
EMBEDDINGS_FILE = "embeddings.npz"
# Every metric this stage writes was measured on the test split, and its name says so:
# "test/per_instance/top1", shown by `dvc exp show` as test.per_instance.top1.
SPLIT = "test"


@dataclass
class EvaluateResult:
    metrics: dict[str, float]  # "test/per_instance/top1" -> value
    samples: int
    intervals: dict[str, float]  # "test/per_instance/top1_ci_low" -> value (metrics.top1_intervals)
    signers: int | None  # how many signers the test samples come from; None = not known


def signers_of(dataset_path: Path, indices: np.ndarray) -> list[str] | None:
    """The signer of each of these samples, or None when any of them has none (or the dataset,
    made by an older slrpipe, has no signer column)."""
    with RaggedFile(dataset_path) as dataset:
        try:
            column = dataset.column("signer")
        except KeyError:
            return None
    signers = [column[i] for i in indices]
    missing = sum(1 for signer in signers if not signer)
    if missing:
        log.warning("%d of %d test samples have no signer id: no per-signer table or interval over signers",
                    missing, len(signers))
        return None
    return signers


def with_intervals(metrics: dict[str, float], intervals: dict[str, float]) -> dict[str, float]:
    """`metrics` with each interval right after the value it bounds ("x/top1", "x/top1_ci_low", ...)."""
    out = {}
    for name, value in metrics.items():
        out[name] = value
        out.update({key: bound for key, bound in intervals.items() if key.startswith(f"{name}_")})
    return out


def nested(flat: dict[str, float]) -> dict:
    """{"per_instance/top1": x} -> {"per_instance": {"top1": x}}: DVC shows each leaf as a column."""
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = round(float(value), 6)
    return tree


def selection_metrics(meta: dict) -> dict:
    """How the evaluated model's epoch was chosen, for metrics.json and results.md:
    {"selected": {"epoch": 12, "val": {"top1": 0.85}}}, keyed by the split that chose it (only
    the epoch for finetune.select: last); nothing for model files that do not record it."""
    selected = meta.get("selected")
    if not selected:
        return {}
    out = {"epoch": int(selected["epoch"])}
    if selected["metric"]:
        out.update(nested({selected["metric"]: selected["value"]}))
    return {"selected": out}


def subsets_of(source: str, glosses: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
    if source != "nmfs_csl":
        return {}
    from slrpipe.data.subsets import nmfs_csl_subset

    names = np.array([nmfs_csl_subset(glosses[label]) for label in labels])
    return {name: names == name for name in ("confusing", "normal") if np.any(names == name)}


def scored_metrics(settings: EvaluateParams, scores: np.ndarray, labels: np.ndarray, ks: list[int],
                 subsets: dict[str, np.ndarray], signers: list[str] | None,
                 fused: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """The test split's metrics ("test/per_instance/top1", "test/fused/...", "test/<subset>/...") and
    the bootstrap intervals of each set's top-1 (over samples and, with 2 or more signers in the
    set, over signers), named beside the values they bound."""
    metrics = evaluate(scores, labels, ks, subsets)
    sets = {"": (scores, np.ones(len(labels), dtype=bool))}
    if fused is not None:
        metrics.update({f"fused/{k}": v for k, v in evaluate(fused, labels, ks).items()})
        sets["fused/"] = (fused, sets[""][1])
    sets.update({f"{name}/": (scores, mask) for name, mask in subsets.items()})
    intervals = {}
    if settings.bootstrap_draws:
        if signers is not None and len(set(signers)) == 1:
            log.info("the test samples come from one signer: no interval over signers")
        for prefix, (values, mask) in sets.items():
            chosen = None if signers is None else [s for s, keep in zip(signers, mask) if keep]
            grouped = chosen if chosen is not None and len(set(chosen)) >= 2 else None
            intervals.update({f"{prefix}{name}": bound for name, bound in top1_intervals(
                values[mask], labels[mask], settings.bootstrap_draws, settings.bootstrap_seed, grouped).items()})
    return ({f"{SPLIT}/{name}": value for name, value in metrics.items()},
            {f"{SPLIT}/{name}": value for name, value in intervals.items()})


def run_evaluate(params: Params, model_path: Path, dataset_path: Path, out_dir: Path, name: str | None = None) -> EvaluateResult:
    """Score the test split of dataset `name` (None: the only one), preprocessed into `dataset_path`."""
    name = params.dataset_name(name)
    source = params.datasets[name].source
    settings = params.evaluate
    device = resolve_device(settings.device)
    model, meta = load_model(model_path)
    model.to(device)
    glosses = meta["glosses"]
    test = PoseDataset(dataset_path, AugmentParams.from_saved(meta["augment"]), "eval", split="test")
    if len(test) == 0:
        raise SlrpipeError(f"{dataset_path} has no test samples: check preprocess.test_fraction or the dataset's split")
    if test.glosses != glosses:
        raise SlrpipeError(f"{model_path} was trained on other glosses than {dataset_path}: rerun finetune")
    scores, labels, features = score_dataset(model, test, device, settings.batch_size)
    ks = [k for k in settings.topk if k <= len(glosses)]
    for k in sorted(set(settings.topk) - set(ks)):
        log.warning("top-%d left out: the model has only %d classes", k, len(glosses))
    subsets = subsets_of(source, glosses, labels)
    fused = None
    if (fusion := settings.fusion_file(name)) is not None:
        other_ids, other_scores = read_scores_csv(fusion, glosses)
        fused = fuse(test.sample_ids, scores, other_ids, other_scores, settings.fusion_normalize)
    signers = signers_of(dataset_path, test.indices)
    signer_count = None if signers is None else len(set(signers))
    metrics, intervals = scored_metrics(settings, scores, labels, ks, subsets, signers, fused)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_scores_csv(out_dir / SCORES_FILE, test.sample_ids, labels, scores, glosses)
    tree = nested(with_intervals(metrics, intervals))
    tree[SPLIT]["samples"] = len(test)
    if signer_count is not None:
        tree[SPLIT]["signers"] = signer_count
    write_json(out_dir / METRICS_FILE, {**tree, **selection_metrics(meta)})
    _write_per_class(out_dir / PER_CLASS_FILE, scores, labels, ks, glosses)
    _write_confusion(out_dir / CONFUSION_FILE, scores, labels, glosses)
    _write_per_signer(out_dir / PER_SIGNER_FILE, scores, labels, signers)
    np.savez(out_dir / EMBEDDINGS_FILE, labels=labels, sample_ids=np.array(test.sample_ids), **features)
    return EvaluateResult(metrics, len(test), intervals, signer_count)


def _write_per_class(path: Path, scores: np.ndarray, labels: np.ndarray, ks: list[int], glosses: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "gloss", "samples", *(f"top{k}" for k in ks)])
    for row in per_class_table(scores, labels, ks):
        writer.writerow([row["class"], glosses[row["class"]], row["samples"], *(f"{row[f'top{k}']:.6f}" for k in ks)])
    write_text_atomic(path, buffer.getvalue())


def _write_per_signer(path: Path, scores: np.ndarray, labels: np.ndarray, signers: list[str] | None) -> None:
    """P-I top-1 per test signer; only the header when signers are not known (the file is a DVC
    output and plot, so it always exists)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["signer", "samples", "top1"])
    for row in per_signer_table(scores, labels, signers) if signers is not None else []:
        writer.writerow([row["signer"], row["samples"], f"{row['top1']:.6f}"])
    write_text_atomic(path, buffer.getvalue())


def _write_confusion(path: Path, scores: np.ndarray, labels: np.ndarray, glosses: list[str]) -> None:
    """One row per test sample (actual, predicted gloss): the input of DVC's confusion-matrix plot."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((glosses[a], glosses[p]) for a, p in zip(labels, scores.argmax(axis=1)))
    write_text_atomic(path, buffer.getvalue())
