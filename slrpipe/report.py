"""The `report` stage: one readable page of this run's results (reports/results.md), beside the
paper's published numbers when the dataset is one of the paper's.

Inputs are what the earlier stages wrote: the evaluate stage's metrics, per-class table and
test embeddings, the preprocess stage's summary, and the dvclive curves of pretraining and
fine-tuning (any of which may be missing: the report says so). Outputs, in `out_dir`:

- `results.md`: what was run (dataset, classes, split, protocol, branches/parts, model,
  epochs), this run's numbers in the layout of the paper's Tables I-V with the published
  numbers beside them, links to the figures, the best and worst classes, and the params
  sections that produced them.
- `results.csv`: tidy rows `source,method,dataset,metric,value` (source `this run` or `paper`;
  values in percent, as the paper prints them).
- `figures/tsne.png`: t-SNE of the test embeddings, joint-only, motion-only and combined (the
  paper's Fig. 3), and `figures/curves.png`: the training curves.

The paper's numbers are package data (`slrpipe/reference/paper_results.csv`, see the README
there): percentages as published.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from slrpipe.config import Params
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import atomic_path, write_text_atomic
from slrpipe.data.subsets import subset_key

log = logging.getLogger(__name__)

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
FIGURES = "figures"
TSNE_PNG = "tsne.png"
CURVES_PNG = "curves.png"

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
EMBEDDINGS_FILE = "embeddings.npz"
SUMMARY_FILE = "preprocess_summary.json"
SUBSETS_FILE = "label_subsets.json"
DATASET_FILE = "dataset.h5"

BRANCHES = ("joint", "motion")
NO_PUBLISHED = "No published numbers exist for this dataset"
PAPER_DATASETS = "MS-ASL (100/200/1000 classes), WLASL (100/300/2000), NMFs-CSL and SLR500"
# Which paper table holds the fully fine-tuned results of each dataset family.
FAMILY_TABLE = {"MSASL": "I", "WLASL": "II", "NMFs-CSL": "III", "SLR500": "IV"}
SEMI_FRACTIONS = ("20%", "40%", "60%")
LEGEND_CLASSES = 20  # at most this many classes get a colour and a legend entry in the t-SNE
TSNE_MAX_POINTS = 5000  # t-SNE of more test samples runs on a seeded random subset
TSNE_SEED = 0
DASH = "–"
PRETRAIN_LOSS = "train/loss/"  # the pretrain stage's loss terms, averaged over the training batches
KNN_CURVE = "val/knn_top1"  # the pretrain stage's kNN monitor, on the validation split


# --- The paper's numbers -------------------------------------------------------------------


@dataclass(frozen=True)
class PaperValue:
    table: str
    group: str
    method: str
    dataset: str
    metric: str
    value: float
    text: str  # as published (NMFs-CSL and SLR500 have one decimal)


def paper_results() -> list[PaperValue]:
    """Every number of the paper's Tables I-XI (percent), from the package data."""
    text = resources.files("slrpipe").joinpath("reference", "paper_results.csv").read_text(encoding="utf-8")
    return [PaperValue(r["table"], r["group"], r["method"], r["dataset"], r["metric"], float(r["value"]), r["value"])
            for r in csv.DictReader(io.StringIO(text))]


def dataset_label(params: Params) -> str:
    """The dataset's name as the paper writes it (MSASL100, WLASL2000, NMFs-CSL, SLR500) or, for
    another dataset, the name of its folder (or manifest file)."""
    d = params.dataset
    if d.source == "msasl":
        return f"MSASL{d.num_classes or 1000}"
    if d.source == "wlasl":
        return f"WLASL{d.num_classes or 2000}"
    if d.source == "nmfs_csl":
        return "NMFs-CSL" if d.num_classes in (None, 1067) else f"NMFs-CSL ({d.num_classes} classes)"
    if d.source == "slr500":
        return "SLR500" if d.num_classes in (None, 500) else f"SLR500 ({d.num_classes} classes)"
    return (d.root.stem if d.source == "manifest" else d.root.name) or d.source


def paper_dataset(params: Params) -> str | None:
    """The paper's column for this dataset (MSASL100 ... SLR500), or None when it published none."""
    label = dataset_label(params)
    known = {"MSASL100", "MSASL200", "MSASL1000", "WLASL100", "WLASL300", "WLASL2000", "NMFs-CSL", "SLR500"}
    return label if label in known else None


def _family(dataset: str) -> str:
    return next(name for name in FAMILY_TABLE if dataset.startswith(name))


# --- Inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    metrics: dict
    per_class: list[dict]
    embeddings: dict[str, np.ndarray]  # "joint" / "motion" -> (N, W)
    labels: np.ndarray
    summary: dict
    subsets: dict[str, list[str]] | None
    glosses: list[str] | None  # every class of the dataset, when dataset.h5 is readable
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # "pretrain" -> name -> (steps, values)
    missing_curves: dict[str, Path] = field(default_factory=dict)


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


def read_per_class(path: Path) -> list[dict]:
    with _need(path, "evaluate").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"label", "gloss", "samples", "top1"} - set(reader.fieldnames or [])
        if missing:
            raise SlrpipeError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: rerun `dvc repro evaluate`")
        rows = []
        for row in reader:
            try:
                rows.append({"label": int(row["label"]), "gloss": row["gloss"], "samples": int(row["samples"]),
                             **{k: float(v) for k, v in row.items() if k.startswith("top") and v not in ("", None)}})
            except ValueError:
                raise SlrpipeError(f"{path} line {reader.line_num}: not a number: rerun `dvc repro evaluate`") from None
    return rows


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
        name = path.relative_to(root).with_suffix("").as_posix()
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows or "step" not in rows[0] or len(rows[0]) < 2:
            log.warning("%s: no step column, left out of the curves", path)
            continue
        step = rows[0].index("step")
        value = len(rows[0]) - 1 if step != len(rows[0]) - 1 else 0
        try:
            data = np.array([(float(r[step]), float(r[value])) for r in rows[1:] if r], dtype=np.float64).reshape(-1, 2)
        except (ValueError, IndexError):
            log.warning("%s: unreadable rows, left out of the curves", path)
            continue
        if len(data):
            curves[name] = (data[:, 0], data[:, 1])
    return curves


def _read_glosses(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("glosses")
        return json.loads(value) if isinstance(value, str) else None
    except (OSError, ValueError) as error:
        log.warning("%s: cannot read the gloss list (%s)", path, error)
        return None


def read_inputs(eval_dir: Path, preprocess_dir: Path, live_dirs: dict[str, Path]) -> Inputs:
    metrics = read_metrics(eval_dir / METRICS_FILE)
    per_class = read_per_class(eval_dir / PER_CLASS_FILE)
    labels, embeddings = read_embeddings(eval_dir / EMBEDDINGS_FILE)
    summary = _read_json(preprocess_dir / SUMMARY_FILE, "preprocess")
    subsets_path = preprocess_dir / SUBSETS_FILE
    subsets = _read_json(subsets_path, "preprocess") if subsets_path.is_file() else None
    curves, missing = {}, {}
    for stage, live_dir in live_dirs.items():
        found = read_curves(live_dir)
        if found:
            curves[stage] = found
        else:
            missing[stage] = live_dir / "plots" / "metrics"
    return Inputs(metrics, per_class, embeddings, labels, summary, subsets,
                  _read_glosses(preprocess_dir / DATASET_FILE), curves, missing)


# --- Tables ---------------------------------------------------------------------------------


def _ks(metrics: dict) -> list[int]:
    keys = metrics.get("per_instance", {})
    return sorted(int(k[3:]) for k in keys if k.startswith("top") and k[3:].isdigit())


def _get(metrics: dict, path: Sequence[str]) -> float | None:
    node = metrics
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


def percent(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f}"


@dataclass(frozen=True)
class Column:
    header: str
    path: tuple[str, ...]  # inside this run's metrics.json
    dataset: str  # the paper's dataset name
    metric: str  # the paper's metric name


@dataclass
class Row:
    source: str  # "this run" or "paper, Table I"
    method: str
    cells: list[str]


@dataclass
class Comparison:
    title: str
    columns: list[Column]
    rows: list[Row]
    paper: list[PaperValue]  # the published values shown, for results.csv
    notes: list[str]


def evaluated_sets(metrics: dict) -> list[tuple[str, tuple[str, ...]]]:
    """(name, path prefix) of every evaluated set in metrics.json: all test samples, fused, subsets."""
    sets = [("all test samples", ())]
    for key, value in metrics.items():
        if key != "per_instance" and key != "per_class" and isinstance(value, dict) and "per_instance" in value:
            sets.append(("fused (+R)" if key == "fused" else f"subset {key}", (key,)))
    return sets


def run_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """This run's every number: one row per evaluated set, P-I then P-C top-k (Table I layout)."""
    ks = _ks(metrics)
    header = ["Evaluated on", *(f"P-I top-{k}" for k in ks), *(f"P-C top-{k}" for k in ks)]
    rows = []
    for name, prefix in evaluated_sets(metrics):
        cells = [percent(_get(metrics, (*prefix, level, f"top{k}"))) for level in ("per_instance", "per_class") for k in ks]
        rows.append([name, *cells])
    return header, rows


def _columns(table: str, dataset: str) -> list[Column]:
    if table == "III":
        return [Column(f"{sub.capitalize()} top-{k}", (() if sub == "total" else (sub,)) + ("per_instance", f"top{k}"),
                       f"NMFs-CSL {sub}", f"P-I top{k}")
                for sub in ("total", "confusing", "normal") for k in (1, 2, 5)]
    if table == "IV":
        return [Column("P-I top-1", ("per_instance", "top1"), dataset, "P-I top1")]
    name = "NMFs-CSL total" if dataset == "NMFs-CSL" else dataset
    ks = (1,) if table == "V" else (1, 5)
    return [Column(f"{short} top-{k}", (level, f"top{k}"), name, f"{short} top{k}")
            for short, level in (("P-I", "per_instance"), ("P-C", "per_class")) for k in ks]


def label_percent(params: Params) -> str | None:
    """The labelled share of the training split as the paper writes it ('20%'); None = all labels."""
    fraction = params.finetune.label_fraction
    return None if fraction is None or fraction >= 1 else subset_key(fraction)


def run_method(params: Params) -> str:
    f = params.finetune
    labels = label_percent(params)
    name = f.protocol
    if labels or f.protocol == "linear":
        name += f" {labels or '100%'}"
    if f.branches != "both":
        name += f", {f.branches} branch"
    if f.parts != "both":
        name += f", {f.parts} only"
    return name


def _ablations(params: Params) -> list[tuple[str, str]]:
    """(table, method) of the paper's MS-ASL ablation rows (Tables VII-XI) that match this run's
    settings, when they differ from the full model."""
    p, f = params.pretrain, params.finetune
    rows = []
    kt = p.use_knowledge_transfer and p.transfer_joint_to_motion and p.transfer_motion_to_joint
    if f.branches != "both":
        rows.append(("VII", f"only {f.branches}") if kt else ("VIII", f"{f.branches} w/o KT"))
    elif not (p.use_consistency and kt):
        rows.append(("IX", {(False, False): "contrastive only", (True, False): "+L_con",
                            (False, True): "+L_KT"}[(p.use_consistency, kt)]))
    if f.parts != "both":
        rows.append(("X", f"{f.parts} only"))
    if (p.lambda_joint, p.lambda_motion) != (0.5, 0.5):
        rows.append(("XI", f"lambda_J {p.lambda_joint:g} lambda_M {p.lambda_motion:g}"))
    return rows


def compare(params: Params, metrics: dict, paper: list[PaperValue]) -> Comparison | None:
    """This run beside the paper's table for this dataset and protocol; None for other datasets."""
    dataset = paper_dataset(params)
    if dataset is None:
        return None
    family = _family(dataset)
    protocol = params.finetune.protocol
    labels = label_percent(params)
    index = {(v.table, v.method, v.dataset, v.metric): v for v in paper}
    main = FAMILY_TABLE[family]
    table = "V" if protocol == "linear" or labels else main
    columns = _columns(table, dataset)
    notes: list[str] = []
    shown: list[PaperValue] = []

    method = run_method(params)
    rows = [Row("this run", method, [percent(_get(metrics, c.path)) for c in columns])]
    if "fused" in metrics and table != "V":
        rows.append(Row("this run", f"{method} (+R)", [percent(_get(metrics, ("fused", *c.path))) for c in columns]))

    def add(source_table: str, name: str) -> bool:
        values = [index.get((source_table, name, c.dataset, c.metric)) for c in columns]
        if not any(values):
            return False
        rows.append(Row(f"paper, Table {source_table}", name, [v.text if v else DASH for v in values]))
        shown.extend(v for v in values if v)
        return True

    def strongest(group: str, exclude: str, count: int) -> list[str]:
        first = columns[0]
        ranked = sorted(((v.value, v.method) for v in paper if v.table == main and v.group == group
                         and v.method != exclude and v.dataset == first.dataset and v.metric == first.metric),
                        reverse=True)
        return [name for _, name in ranked[:count]]

    if protocol in ("finetune", "semi") and labels is None:
        title = f"Table {main}: fine-tuning, {dataset} (accuracy in %)"
        add(main, "Ours")
        if "fused" in metrics:
            add(main, "Ours (+R)")
        ablations = _ablations(params)
        if ablations and family != "MSASL":
            notes.append("The paper's ablations (Tables VII-XI) cover MS-ASL only; this run's ablated settings "
                         "have no published counterpart for this dataset.")
        for ablation_table, name in ablations if family == "MSASL" else []:
            if not add(ablation_table, name):
                notes.append(f"The paper has no ablation row for this run's setting {name!r} (Table {ablation_table}).")
        for name in strongest("skeleton", "Ours", 3):
            add(main, name)
        if "fused" in metrics:
            for name in strongest("fusion", "Ours (+R)", 2):
                add(main, name)
        notes.append(f"Baselines: the strongest pose-based methods of Table {main} by {columns[0].header}"
                     + (", and the strongest RGB-fused (+R) ones." if "fused" in metrics else "."))
        if "fused" not in metrics:
            notes.append("This run has no fused (+R) metrics (evaluate.fusion_scores is null), so the paper's "
                         "RGB-fused rows are left out.")
    elif protocol == "scratch" and labels is None:
        title = f"Training from scratch, {dataset} (accuracy in %)"
        if family == "MSASL":
            add("VI", "pretrain data 0%")
            notes.append("The paper's Table VI row \"pretrain data 0%\" is the same model trained without "
                         "pretraining; \"Ours\" (pretrained, then fine-tuned) is shown for reference.")
        else:
            notes.append(f"The paper publishes no from-scratch results for {dataset} (Table VI covers MS-ASL only); "
                         f"its pretrained and fine-tuned \"Ours\" (Table {main}) is shown for reference.")
        add(main, "Ours")
    else:  # Table V: linear (frozen encoders, all labels) and semi (fine-tuned on a label subset)
        share = labels or "100%"
        what = {"linear": "frozen encoders", "scratch": "no pretraining"}.get(protocol, "fine-tuned")
        title = f"Table V: {what}, {share} of the labels, {dataset} (top-1 accuracy in %)"
        counterpart = f"Ours linear {share}" if protocol == "linear" else f"Ours semi {share}"
        if not add("V", counterpart):
            published = "100%" if protocol == "linear" else ", ".join(SEMI_FRACTIONS)
            notes.append(f"The paper publishes {'linear' if protocol == 'linear' else 'semi-supervised'} results for "
                         f"{published} of the labels only, not for {share} (finetune.label_fraction).")
        elif protocol == "scratch":
            notes.append(f"The paper publishes no from-scratch result on {share} of the labels; \"{counterpart}\" "
                         "(pretrained, then fine-tuned on the same share) is its counterpart.")
        add(main, "Ours")
        notes.append(f"\"Ours\" from Table {main} (all labels, fully fine-tuned) is shown for reference.")
    return Comparison(title, columns, rows, shown, notes)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    def escape(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_csv_rows(params: Params, metrics: dict, comparison: Comparison | None) -> list[list[str]]:
    """Tidy rows: this run's every metric (percent, 4 decimals), then the published values shown."""
    label = paper_dataset(params) or dataset_label(params)
    method = run_method(params)
    rows = []
    for _, prefix in evaluated_sets(metrics):
        key = prefix[0] if prefix else None
        set_method = f"{method} (+R)" if key == "fused" else method
        if key in (None, "fused"):
            set_dataset = "NMFs-CSL total" if label == "NMFs-CSL" else label
        else:
            set_dataset = f"{label} {key}"
        for level, short in (("per_instance", "P-I"), ("per_class", "P-C")):
            for k in _ks(metrics):
                value = _get(metrics, (*prefix, level, f"top{k}"))
                if value is not None:
                    rows.append(["this run", set_method, set_dataset, f"{short} top{k}", f"{100 * value:.4f}"])
    seen = set()
    for v in comparison.paper if comparison else []:
        key = (v.method, v.dataset, v.metric)
        if key not in seen:
            seen.add(key)
            rows.append(["paper", v.method, v.dataset, v.metric, v.text])
    return rows


# --- Figures --------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, facecolor="white", layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", facecolor="white")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def tsne_panels(embeddings: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(title, L2-normalized features) of each panel: joint-only, motion-only, combined (the
    concatenation of both L2-normalized features), for the branches that exist."""
    panels = [(f"{b.capitalize()} only", _unit(embeddings[b])) for b in BRANCHES if b in embeddings]
    if all(b in embeddings for b in BRANCHES):
        panels.append(("Joint + motion (concatenated)", np.concatenate([_unit(embeddings[b]) for b in BRANCHES], axis=1)))
    return panels


def tsne_perplexity(n: int) -> float:
    """sklearn's default 30, lowered for small test sets: it must stay below the number of points."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def tsne_2d(features: np.ndarray) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a requirement of scikit-learn

    # One OpenMP thread: the same result on every machine, and Barnes-Hut's threads stall (20x
    # slower) on a machine whose cores are busy, e.g. with training.
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=tsne_perplexity(len(features)), init="pca", learning_rate="auto",
                    random_state=TSNE_SEED).fit_transform(features)


def plot_tsne(path: Path, embeddings: dict[str, np.ndarray], labels: np.ndarray, names: dict[int, str]) -> str | None:
    """Write the t-SNE figure; returns why it was not drawn, or None."""
    n = len(labels)
    if n < 5:
        return f"only {n} test samples: too few for a t-SNE"
    chosen = np.arange(n)
    if n > TSNE_MAX_POINTS:
        chosen = np.sort(np.random.default_rng(TSNE_SEED).choice(n, TSNE_MAX_POINTS, replace=False))
    labels = labels[chosen]
    panels = [(title, x[chosen]) for title, x in tsne_panels(embeddings)]
    classes, counts = np.unique(labels, return_counts=True)
    order = classes[np.lexsort((classes, -counts))]  # most frequent first, then by label
    coloured = order[:LEGEND_CLASSES]
    from matplotlib import colormaps

    # Categorical colours without the greys (grey is for the classes left out of the legend);
    # past the palette, the colours repeat with another marker.
    palette = ([c for i, c in enumerate(colormaps["tab10"].colors) if i != 7] if len(coloured) <= 9 else
               [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)])
    markers = "os^Dv<>pP*"

    figure = _figure(4.6 * len(panels) + 1.8, 5.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    handles = {}
    for ax, (title, features) in zip(axes, panels):
        xy = tsne_2d(features)
        others = ~np.isin(labels, coloured)
        if others.any():
            handles["other"] = ax.scatter(xy[others, 0], xy[others, 1], s=8, c="#c8c8c8", linewidths=0,
                                          label=f"other classes ({len(classes) - len(coloured)})")
        for i, label in enumerate(coloured):
            mine = labels == label
            handles[int(label)] = ax.scatter(xy[mine, 0], xy[mine, 1], s=34, color=palette[i % len(palette)],
                                             marker=markers[(i // len(palette)) % len(markers)],
                                             edgecolors="white", linewidths=0.4,
                                             label=names.get(int(label), f"class {int(label)}"))
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.grid(True, color="#eeeeee")
        ax.set_axisbelow(True)
    subset = f"a random {len(chosen)} of {n}" if len(chosen) < n else f"{n}"
    details = f"{subset} samples, {len(classes)} classes; perplexity {tsne_perplexity(len(chosen)):.3g}"
    figure.suptitle(f"t-SNE of test-set embeddings{' ' if len(panels) > 1 else chr(10)}({details})", fontsize=13)
    legend = [handles[int(c)] for c in coloured] + ([handles["other"]] if "other" in handles else [])
    title = "class" if len(coloured) == len(classes) else f"{len(coloured)} most frequent classes"
    figure.legend(handles=legend, loc="outside right center", title=title, fontsize=9, title_fontsize=10,
                  frameon=False, ncol=1 if len(legend) <= 22 else 2)
    _save(figure, path)
    return None


def _epochs(steps: np.ndarray) -> np.ndarray:
    return steps + 1  # dvclive's step is the 0-based epoch index


def _lr_drops(ax, milestones: Sequence[int], curves: dict) -> None:
    """Dotted lines where the lr drops, within the epochs the stage's curves reach; integer epochs."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = max((float(steps.max()) for steps, _ in curves.values() if len(steps)), default=-1.0)
    # MultiStepLR: from 0-based epoch m on (1-based epoch m + 1) the lr is lower.
    for milestone in milestones:
        if milestone <= last:
            ax.axvline(milestone + 0.5, color="#999999", linestyle=":", linewidth=1)


def _empty(ax, title: str, why: str) -> None:
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#666666", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(path: Path, curves: dict[str, dict], missing_why: dict[str, str],
                lr_steps: dict[str, Sequence[int]] | None = None, contrast_chance: float | None = None) -> None:
    """2 x 2 panels: pretraining losses, pretraining kNN accuracy, fine-tuning loss, fine-tuning accuracy;
    dotted lines where the learning rate drops (`lr_steps`: stage -> MultiStepLR milestones), and a
    dashed line at the contrastive terms' chance level (`contrast_chance`: PretrainParams.contrast_chance)."""
    lr_steps = lr_steps or {}
    figure = _figure(12.5, 8.5)
    (loss_ax, knn_ax), (ft_loss_ax, ft_acc_ax) = figure.subplots(2, 2)
    pre = curves.get("pretrain", {})
    fine = curves.get("finetune", {})

    losses = {name: c for name, c in pre.items() if name.startswith(PRETRAIN_LOSS)}
    if losses:
        for name, (steps, values) in sorted(losses.items(), key=lambda item: item[0] != f"{PRETRAIN_LOSS}total"):
            total = name == f"{PRETRAIN_LOSS}total"
            loss_ax.plot(_epochs(steps), values, label=name.removeprefix(PRETRAIN_LOSS).replace("_", " "),
                         color="black" if total else None, linewidth=2.2 if total else 1.2)
        if contrast_chance is not None and any(name.startswith(f"{PRETRAIN_LOSS}contrast_") for name in losses):
            # A contrastive term at this line has learned nothing: the positive is one key among bank + 1.
            loss_ax.axhline(contrast_chance, color="tab:red", linestyle="--", linewidth=1.2,
                            label=f"contrast at chance ({contrast_chance:.2f})")
        _lr_drops(loss_ax, lr_steps.get("pretrain", ()), pre)
        loss_ax.set_title("Pretraining losses", fontsize=12)
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss")
        loss_ax.legend(fontsize=8, ncol=2)
    else:
        _empty(loss_ax, "Pretraining losses", missing_why.get("pretrain", "no pretraining loss curves"))

    if KNN_CURVE in pre:
        steps, values = pre[KNN_CURVE]
        knn_ax.plot(_epochs(steps), 100 * values, marker="o", color="tab:green", label="kNN top-1 (validation)")
        _lr_drops(knn_ax, lr_steps.get("pretrain", ()), pre)
        knn_ax.set_title("Pretraining: kNN accuracy of the features", fontsize=12)
        knn_ax.set_xlabel("epoch")
        knn_ax.set_ylabel("top-1 accuracy (%)")
        knn_ax.legend(fontsize=9)
    else:
        _empty(knn_ax, "Pretraining: kNN accuracy of the features",
               missing_why.get("pretrain", "no kNN accuracy curve"))

    if "train/loss" in fine:
        steps, values = fine["train/loss"]
        ft_loss_ax.plot(_epochs(steps), values, color="tab:red", label="training loss")
        _lr_drops(ft_loss_ax, lr_steps.get("finetune", ()), fine)
        ft_loss_ax.set_title("Fine-tuning loss", fontsize=12)
        ft_loss_ax.set_xlabel("epoch")
        ft_loss_ax.set_ylabel("cross-entropy loss")
        ft_loss_ax.legend(fontsize=9)
    else:
        _empty(ft_loss_ax, "Fine-tuning loss", missing_why.get("finetune", "no fine-tuning loss curve"))

    accuracy = [(name, label, style) for name, label, style in (
        ("train/top1", "train top-1", {"color": "tab:blue"}),
        ("val/top1", "validation top-1", {"color": "tab:orange"}),
        ("val/top5", "validation top-5", {"color": "tab:orange", "linestyle": "--"}),
        ("test/top1", "test top-1 (finetune.select: test)", {"color": "tab:purple"}),
    ) if name in fine]
    if accuracy:
        for name, label, style in accuracy:
            steps, values = fine[name]
            ft_acc_ax.plot(_epochs(steps), 100 * values, label=label, **style)
        _lr_drops(ft_acc_ax, lr_steps.get("finetune", ()), fine)
        ft_acc_ax.set_title("Fine-tuning accuracy", fontsize=12)
        ft_acc_ax.set_xlabel("epoch")
        ft_acc_ax.set_ylabel("accuracy (%)")
        ft_acc_ax.set_ylim(-2, 102)
        ft_acc_ax.legend(fontsize=9)
    else:
        _empty(ft_acc_ax, "Fine-tuning accuracy", missing_why.get("finetune", "no fine-tuning accuracy curves"))
    for ax in (loss_ax, knn_ax, ft_loss_ax, ft_acc_ax):
        ax.grid(True, color="#eeeeee")
    if losses and KNN_CURVE in pre:  # the same epochs under each other's ticks
        knn_ax.set_xlim(loss_ax.get_xlim())
    drops = any(line.get_linestyle() == ":" for ax in (loss_ax, knn_ax, ft_loss_ax, ft_acc_ax) for line in ax.get_lines())
    figure.suptitle("Training curves" + (" (dotted lines: learning-rate drops)" if drops else ""), fontsize=13)
    _save(figure, path)


# --- results.md -----------------------------------------------------------------------------


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _split_text(params: Params) -> str:
    p = params.preprocess
    how = ("by signer (no signer in two splits)" if p.split == "signer" else "random, class-stratified")
    if params.dataset.source in ("wlasl", "msasl"):
        return "the dataset's official split"
    if params.dataset.source in ("nmfs_csl", "slr500"):  # official train and test only
        return (f"the dataset's official train/test split; validation: {p.val_fraction:.0%} of the training samples, "
                f"drawn {how}, seed {p.seed} (`preprocess.split: {p.split}`)")
    text = (f"seeded split {how}, seed {p.seed}, validation {p.val_fraction:.0%}, test {p.test_fraction:.0%}"
            f" (`preprocess.split: {p.split}`)")
    if params.dataset.source == "manifest":
        text += ("; rows the manifest marks test or val keep their split, rows marked train become train or "
                 "validation (validation only when the manifest marks none)")
    return text


def _missing_why(params: Params, inputs: Inputs) -> dict[str, str]:
    why = {}
    for stage, where in inputs.missing_curves.items():
        if stage == "pretrain" and params.finetune.protocol == "scratch":
            why[stage] = "no pretraining curves:\nprotocol scratch trains without pretraining"
        else:
            why[stage] = f"no {'pretraining' if stage == 'pretrain' else 'fine-tuning'} curves found\n({_relative(where)})"
    return why


def _schedule(lr: float, gamma: float, steps: Sequence[int], epochs: int) -> str:
    """The lr schedule as it ran: a MultiStepLR milestone at or past the last epoch never fires."""
    taken = [m for m in steps if m < epochs]
    unreached = [m for m in steps if m >= epochs]
    text = (f"{lr:g} (x{gamma:g} after epoch{'s' if len(taken) > 1 else ''} {', '.join(str(m) for m in taken)}"
            if taken else f"{lr:g} (constant")
    if unreached:
        text += f"; lr_steps {', '.join(str(m) for m in unreached)} not reached in {epochs} epochs"
    return text + ")"


def _what_was_run(params: Params, inputs: Inputs) -> list[str]:
    d, f, pre, m = params.dataset, params.finetune, params.pretrain, params.model
    s = inputs.summary
    test_classes = len(np.unique(inputs.labels))
    classes = len(inputs.glosses) if inputs.glosses else d.num_classes
    class_text = f"{classes} classes, {test_classes} of them in the test split" if classes else f"{test_classes} classes in the test split"
    sizes = ", ".join(f"{name} {s[f'{name}_samples']}" for name in ("train", "val", "test") if f"{name}_samples" in s)
    bad = (f"; {s['bad']} of {s['samples'] + s['bad']} samples left out by preprocessing (no usable frame)"
           if s.get("bad") and "samples" in s else "")
    protocol = {
        "finetune": "finetune: the pretrained encoders and the classifier are trained",
        "linear": "linear: the pretrained encoders are frozen; only the linear classifier is trained",
        "semi": "semi: the pretrained encoders and the classifier are trained",
        "scratch": "scratch: the same model trained from a random initialisation, without pretraining",
    }[f.protocol]
    key = label_percent(params)
    if key is None:
        protocol += "; all training labels"
    else:
        count = len(inputs.subsets[key]) if inputs.subsets and key in inputs.subsets else s.get(f"labelled_{key}")
        protocol += f"; {key} of the training labels" + (f" ({count} labelled samples)" if count is not None else "")
    size = m.chosen
    model = (f"`{m.size}` (joint GCN {list(size.joint_channels)}, part GCN {list(size.part_channels)}, "
             f"feature width {size.width}; hand Transformer {size.hand_layers} x {size.hand_heads} heads, "
             f"trunk Transformer {size.trunk_layers} x {size.trunk_heads} heads)")
    pretraining = ("none (protocol scratch)" if f.protocol == "scratch" else
                   f"{pre.epochs} epochs, branches {pre.branches}, parts {pre.parts}, consistency "
                   f"{'on' if pre.use_consistency else 'off'}, knowledge transfer {'on' if pre.use_knowledge_transfer else 'off'}, "
                   f"lambda_J {pre.lambda_joint:g}, lambda_M {pre.lambda_motion:g}, batch {pre.batch_size}, "
                   f"lr {_schedule(pre.lr, pre.lr_gamma, pre.lr_steps, pre.epochs)}")
    finetuning = (f"{f.schedule.epochs} epochs, lr {_schedule(f.lr, f.lr_gamma, f.schedule.lr_steps, f.schedule.epochs)}, "
                  f"batch {f.batch_size}, branch logits combined by {f.combine}")
    ks = ", ".join(f"top-{k}" for k in _ks(inputs.metrics))
    lines = [
        "| | |",
        "|---|---|",
        f"| Dataset | {dataset_label(params)} (source `{d.source}`, root `{_relative(d.root)}`) |",
        f"| Classes | {class_text} |",
        f"| Split | {_split_text(params)} |",
        f"| Split sizes | {sizes or 'unknown'}{bad} |",
        f"| Protocol | {protocol} |",
        f"| Branches / parts | {f.branches} / {f.parts} |",
        f"| Model size | {model} |",
        f"| Pretraining | {pretraining} |",
        f"| Fine-tuning | {finetuning} |",
        f"| Model selection | {selection_text(inputs.metrics, f.schedule.epochs)} |",
        (f"| Evaluated | {inputs.metrics.get('samples', len(inputs.labels))} test samples, {ks}; "
        "P-I = per instance, P-C = mean over classes |"),
    ]
    return lines


def selection_text(metrics: dict, epochs: int) -> str:
    """How the evaluated epoch was chosen, from metrics.json's `selected` (written by evaluate
    from the model file)."""
    selected = metrics.get("selected")
    if not isinstance(selected, dict) or "epoch" not in selected:
        return "not recorded in the model file (made by an older slrpipe): rerun `dvc repro finetune`"
    epoch = f"epoch {selected['epoch']} of {epochs}"
    if "test" in selected:
        return (f"selected on test (authors' protocol, optimistic): {epoch}, the best test top-1 during training "
                f"({percent(_get(selected, ('test', 'top1')))} %) (`finetune.select: test`)")
    if "val" in selected:
        return (f"{epoch}, the best validation top-1 ({percent(_get(selected, ('val', 'top1')))} %) "
                "(`finetune.select: val`)")
    return f"{epoch}, the last (`finetune.select: last`)"


def _per_class_section(rows: list[dict], link: str) -> list[str]:
    if not rows:
        return ["No per-class results (per_class.csv is empty)."]
    ks = sorted({int(k[3:]) for r in rows for k in r if k.startswith("top") and k[3:].isdigit()})
    header = ["Gloss", "Label", "Test samples", *(f"top-{k} (%)" for k in ks)]

    def line(r: dict) -> list[str]:
        return [r["gloss"], str(r["label"]), str(r["samples"]), *(percent(r.get(f"top{k}")) for k in ks)]

    best = sorted(rows, key=lambda r: (-r["top1"], -r["samples"], r["gloss"]))
    if len(rows) <= 10:
        return [f"All {len(rows)} test classes, best first:", "", markdown_table(header, [line(r) for r in best], 2)]
    # Both orders put the better-tested class first among equal accuracies, so with many ties the
    # same classes would top both lists: the worst are picked from the classes not shown as best.
    best = best[:5]
    worst = [r for r in sorted(rows, key=lambda r: (r["top1"], -r["samples"], r["gloss"])) if r not in best]
    perfect = sum(r["top1"] == 1.0 for r in rows)
    zero = sum(r["top1"] == 0.0 for r in rows)
    return [(f"{len(rows)} test classes; {perfect} recognized perfectly (top-1 100 %), {zero} never (top-1 0 %). "
            f"Ties are broken by the number of test samples. All classes: [{Path(link).name}]({link})."), "",
            "Best 5 classes:", "", markdown_table(header, [line(r) for r in best], 2), "",
            "Worst 5 classes:", "", markdown_table(header, [line(r) for r in worst[:5]], 2)]


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values on one line ([640, 480]), as params.yaml writes them."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(item, (list, dict)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def _params_yaml(params: Params) -> str:
    data = params.model_dump(mode="json")
    data["dataset"]["root"] = _relative(params.dataset.root)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def render_markdown(params: Params, inputs: Inputs, comparison: Comparison | None, figures: dict[str, str | None],
                    figure_dir: str, per_class_link: str) -> str:
    label = dataset_label(params)
    out = [f"# Results: {label}, protocol {params.finetune.protocol}", "",
           ("Isolated sign language recognition from pose with self-supervised spatial-temporal consistency "
           "pretraining (Zhao et al., IEEE TIP 2024), as run by slrpipe. Accuracies are in percent."), "",
           "## What was run", "", *_what_was_run(params, inputs), "",
           "## Results", "", "### This run", ""]
    header, rows = run_table(inputs.metrics)
    out += [markdown_table(header, rows), ""]
    selected = inputs.metrics.get("selected")
    if isinstance(selected, dict) and "test" in selected:
        out += [("The model was selected on test (authors' protocol, optimistic): the epoch with the best test "
                 "top-1, so these test numbers are not an unbiased estimate."), ""]

    if comparison is None:
        out += [(f"{NO_PUBLISHED}: the paper reports {PAPER_DATASETS} only, so this run's numbers above "
                "(in the layout of its Tables I-II) stand alone."), ""]
    else:
        out += [f"### Compared with the paper: {comparison.title}", ""]
        header = ["Source", "Method", *(c.header for c in comparison.columns)]
        out += [markdown_table(header, [[r.source, r.method, *r.cells] for r in comparison.rows], 2), ""]
        out += [("The paper's numbers are as published in Zhao et al., IEEE TIP 2024 (P-I = per instance, "
                f"P-C = per class); {DASH} = not reported.")]
        out += [""] + [f"- {note}" for note in comparison.notes] + [""] if comparison.notes else [""]
        if params.model.size != "paper":
            out += [(f"This run used model size `{params.model.size}`, not the paper's; "
                    f"pretraining ran {params.pretrain.epochs} epochs (paper: 150)."), ""]

    out += ["## Figures", ""]
    tsne_why, curves_why = figures.get("tsne"), figures.get("curves")
    if tsne_why is None:
        branches = [b for b in BRANCHES if b in inputs.embeddings]
        which = ("joint-only, motion-only and combined (both L2-normalized, concatenated)" if len(branches) == 2
                 else f"{branches[0]}-only: the model has no {'motion' if branches[0] == 'joint' else 'joint'} branch")
        out += [f"t-SNE of the test embeddings, {which}; coloured by class (the paper's Fig. 3):", "",
                f"![t-SNE of test embeddings]({figure_dir}/{TSNE_PNG})", ""]
    else:
        out += [f"No t-SNE figure: {tsne_why}.", ""]
    why = _missing_why(params, inputs)
    for stage in ("pretrain", "finetune"):
        if stage in why:
            out += [f"- {why[stage].replace(chr(10), ' ')}."]
    if why:
        out += [""]
    if curves_why is None:
        out += ["Training curves:", "", f"![Training curves]({figure_dir}/{CURVES_PNG})", ""]
    else:
        out += [f"No training-curve figure: {curves_why}.", ""]

    out += ["## Per-class results", "", *_per_class_section(inputs.per_class, per_class_link), ""]
    out += ["## Reproducibility", "",
            ("`dvc repro` with these `params.yaml` sections produced the numbers above "
            "(split sizes from `data/preprocess/preprocess_summary.json`):"), "",
            "```yaml", _params_yaml(params).rstrip(), "```", ""]
    return "\n".join(out)


# --- The stage ------------------------------------------------------------------------------


def run_report(params: Params, eval_dir: Path, preprocess_dir: Path, live_dirs: dict[str, Path], out_dir: Path) -> Path:
    """Write results.md, results.csv and the figures into `out_dir`; returns the results.md path."""
    inputs = read_inputs(eval_dir, preprocess_dir, live_dirs)
    comparison = compare(params, inputs.metrics, paper_results())
    figure_dir = out_dir / FIGURES
    names = {r["label"]: r["gloss"] for r in inputs.per_class}
    if inputs.glosses:
        names = {i: g for i, g in enumerate(inputs.glosses)} | names
    figures: dict[str, str | None] = {}
    figures["tsne"] = plot_tsne(figure_dir / TSNE_PNG, inputs.embeddings, inputs.labels, names)
    if inputs.curves:
        schedules = {"pretrain": (params.pretrain.lr_steps, params.pretrain.epochs),
                     "finetune": (params.finetune.schedule.lr_steps, params.finetune.schedule.epochs)}
        lr_steps = {stage: [m for m in steps if 0 < m < epochs] for stage, (steps, epochs) in schedules.items()}
        plot_curves(figure_dir / CURVES_PNG, inputs.curves, _missing_why(params, inputs), lr_steps,
                    params.pretrain.contrast_chance)
        figures["curves"] = None
    else:
        figures["curves"] = "neither pretraining nor fine-tuning curves were found"
    for stage in ("tsne", "curves"):
        if figures[stage] is not None:  # no stale figure from an earlier run next to this report
            (figure_dir / (TSNE_PNG if stage == "tsne" else CURVES_PNG)).unlink(missing_ok=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    per_class_link = Path(os.path.relpath(eval_dir / PER_CLASS_FILE, out_dir)).as_posix()
    markdown = render_markdown(params, inputs, comparison, figures, FIGURES, per_class_link)
    path = out_dir / RESULTS_MD
    write_text_atomic(path, markdown)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "method", "dataset", "metric", "value"])
    writer.writerows(results_csv_rows(params, inputs.metrics, comparison))
    write_text_atomic(out_dir / RESULTS_CSV, buffer.getvalue())
    return path
