"""The report's numbers as DataFrames: this run's accuracies, the paper's (package data
`slrpipe/reference/paper_results.csv`, percent as printed), both side by side, the tidy
results.csv and the best and worst classes. Accuracies are fractions here, percent when shown."""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from slrpipe.config import Params
from slrpipe.data.subsets import subset_key

DASH = "–"
LEVELS = {"per_instance": "P-I", "per_class": "P-C"}
PAPER_DATASETS = ("MSASL100", "MSASL200", "MSASL1000", "WLASL100", "WLASL300", "WLASL2000", "NMFs-CSL", "SLR500")
FAMILY_TABLE = {"MSASL": "I", "WLASL": "II", "NMFs-CSL": "III", "SLR500": "IV"}  # each family's fine-tuning table


@dataclass
class Inputs:
    """What the earlier stages wrote, as `slrpipe.evaluation.report.read_inputs` reads it."""

    metrics: dict  # metrics.json's test part, with `selected` (how the model was chosen) when recorded
    per_class: pd.DataFrame  # label, gloss, samples, top1, top5, ...
    embeddings: dict[str, np.ndarray]  # "joint" / "motion" -> (N, W)
    labels: np.ndarray
    summary: dict
    subsets: dict[str, list[str]] | None
    glosses: list[str] | None  # every class of the dataset (label order), when known
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # "pretrain" -> name -> (steps, values)
    missing_curves: dict[str, Path]  # stage -> where its curves were looked for in vain
    per_signer: pd.DataFrame  # signer, samples, top1; no rows when the test samples have no signer ids


def percent(value: float | None) -> str:
    return DASH if value is None or np.isnan(value) else f"{100 * value:.2f}"


def paper_results() -> pd.DataFrame:
    """The paper's Tables I-XI: `value` as printed (NMFs-CSL and SLR500 with one decimal), `number` as a float."""
    text = resources.files("slrpipe").joinpath("reference", "paper_results.csv").read_text(encoding="utf-8")
    paper = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return paper.assign(number=paper["value"].astype(float))


def dataset_label(params: Params) -> str:
    """The dataset's name as the paper writes it (MSASL100, WLASL2000, NMFs-CSL, SLR500) or, for
    another dataset, its name under `datasets:` (params narrowed to one dataset)."""
    d = params.dataset()
    if d.source in ("msasl", "wlasl"):
        return f"{d.source.upper()}{d.num_classes or (1000 if d.source == 'msasl' else 2000)}"
    if d.source in ("nmfs_csl", "slr500"):
        name, classes = ("NMFs-CSL", 1067) if d.source == "nmfs_csl" else ("SLR500", 500)
        return name if d.num_classes in (None, classes) else f"{name} ({d.num_classes} classes)"
    return params.dataset_name()


def paper_dataset(params: Params) -> str | None:
    """The paper's column for this dataset (MSASL100 ... SLR500), or None when it published none."""
    label = dataset_label(params)
    return label if label in PAPER_DATASETS else None


def accuracies(metrics: dict) -> pd.DataFrame:
    """metrics.json's accuracies, a row each: set ('' all test samples, 'fused' or a subset), level
    (P-I, P-C), k, value; all test samples first, then the other sets in the file's order."""
    sets = [("", metrics), *((key, node) for key, node in metrics.items() if isinstance(node, dict) and key not in LEVELS)]
    rows = [(i, name, j, short, int(key[3:]), float(value))
            for i, (name, node) in enumerate(sets) for j, (level, short) in enumerate(LEVELS.items())
            if isinstance(node.get(level), dict) for key, value in node[level].items()
            if key.startswith("top") and key[3:].isdigit() and isinstance(value, (int, float))]
    table = pd.DataFrame(rows, columns=["i", "set", "j", "level", "k", "value"])
    return table.sort_values(["i", "j", "k"]).drop(columns=["i", "j"]).reset_index(drop=True)


def intervals(metrics: dict, kind: str = "ci") -> dict[tuple[str, int], tuple[float, float]]:
    """metrics.json's bootstrap intervals of all test samples: (level, k) -> (low, high). `kind`:
    "ci" over test samples, "signer_ci" over signers."""
    found = {}
    for level, short in LEVELS.items():
        node = metrics.get(level)
        for key, low in node.items() if isinstance(node, dict) else ():
            if key.startswith("top") and key.endswith(f"_{kind}_low") and key[3:-len(f"_{kind}_low")].isdigit():
                high = node.get(key.replace("_low", "_high"))
                if isinstance(low, (int, float)) and isinstance(high, (int, float)):
                    found[(short, int(key[3:-len(f"_{kind}_low")]))] = (float(low), float(high))
    return found


def bracket(bounds: tuple[float, float]) -> str:
    return f"[{percent(bounds[0])}, {percent(bounds[1])}]"


def top_ks(acc: pd.DataFrame) -> list[int]:
    return sorted(acc.k[(acc.set == "") & (acc.level == "P-I")])


BASELINE_ROW = "baseline: logistic regression, all test samples"
BASELINE_METHOD = "baseline (logistic regression)"


def set_intervals(metrics: dict, kind: str = "ci") -> dict[str, dict[tuple[str, int], tuple[float, float]]]:
    """The bootstrap intervals of every evaluated set: set ('' all test samples, 'fused', a subset) -> intervals()."""
    sets = {"": metrics, **{key: node for key, node in metrics.items() if isinstance(node, dict) and key not in LEVELS}}
    return {name: found for name, node in sets.items() if (found := intervals(node, kind))}


def run_table(acc: pd.DataFrame, bounds: dict[tuple[str, int], tuple[float, float]] | None = None,
              set_bounds: dict[str, dict[tuple[str, int], tuple[float, float]]] | None = None,
              baseline: tuple[pd.DataFrame, dict[tuple[str, int], tuple[float, float]]] | None = None) -> pd.DataFrame:
    """This run's every number: a row per evaluated set, P-I then P-C top-k (Table I's layout);
    `bounds` ((level, k) -> interval, of all test samples) and `set_bounds` (set -> the same, of
    the fused and subset rows) follow their values in brackets. `baseline` (its accuracies and
    intervals) adds its row of all test samples last."""
    columns = [(level, k) for level in LEVELS.values() for k in top_ks(acc)]
    sets = list(dict.fromkeys(acc.set))
    table = acc.pivot(index="set", columns=["level", "k"], values="value").reindex(index=sets, columns=columns)
    names = ["all test samples" if s == "" else "fused (+R)" if s == "fused" else f"subset {s}" for s in sets]
    table = table.map(percent)
    for name, found in {**(set_bounds or {}), **({"": bounds} if bounds else {})}.items():
        for column, interval in found.items():
            if column in table.columns and name in table.index:
                table.loc[name, column] = f"{table.loc[name, column]} {bracket(interval)}"
    table = table.set_axis(names).set_axis([f"{level} top-{k}" for level, k in columns], axis=1)
    table = table.rename_axis("Evaluated on").reset_index()
    if baseline is not None:
        theirs = run_table(baseline[0][baseline[0].set == ""], baseline[1])
        theirs = theirs.assign(**{"Evaluated on": BASELINE_ROW}).reindex(columns=table.columns, fill_value=DASH)
        table = pd.concat([table, theirs], ignore_index=True)
    return table


def label_percent(params: Params) -> str | None:
    """The labelled share of the training split as the paper writes it ('20%'); None = all labels."""
    fraction = params.finetune.label_fraction
    return None if fraction is None or fraction >= 1 else subset_key(fraction)


def run_method(params: Params) -> str:
    f, labels = params.finetune, label_percent(params)
    name = f.protocol + (f" {labels or '100%'}" if labels or f.protocol == "linear" else "")
    return name + (f", {f.branches} branch" if f.branches != "both" else "") + (f", {f.parts} only" if f.parts != "both" else "")


def _ablations(params: Params) -> list[tuple[str, str]]:
    """(table, method) of the paper's MS-ASL ablation rows (Tables VII-XI) that match this run's
    settings, when they differ from the full model."""
    p, f = params.pretrain, params.finetune
    kt = p.use_knowledge_transfer and p.transfer_joint_to_motion and p.transfer_motion_to_joint
    rows = []
    if f.branches != "both":
        rows.append(("VII", f"only {f.branches}") if kt else ("VIII", f"{f.branches} w/o KT"))
    elif not (p.use_consistency and kt):
        rows.append(("IX", {(False, False): "contrastive only", (True, False): "+L_con", (False, True): "+L_KT"}[
            (p.use_consistency, kt)]))
    if f.parts != "both":
        rows.append(("X", f"{f.parts} only"))
    if (p.lambda_joint, p.lambda_motion) != (0.5, 0.5):
        rows.append(("XI", f"lambda_J {p.lambda_joint:g} lambda_M {p.lambda_motion:g}"))
    return rows


def _columns(table: str, dataset: str) -> pd.DataFrame:
    """The numbers of one of the paper's tables: header, where this run has it (set, level, k) and
    what the paper calls it (dataset, metric)."""
    if table == "III":
        rows = [(f"{sub.capitalize()} top-{k}", "" if sub == "total" else sub, "P-I", k, f"NMFs-CSL {sub}")
                for sub in ("total", "confusing", "normal") for k in (1, 2, 5)]
    else:
        name = "NMFs-CSL total" if dataset == "NMFs-CSL" else dataset
        levels, ks = (("P-I",), (1,)) if table == "IV" else (LEVELS.values(), (1,) if table == "V" else (1, 5))
        rows = [(f"{level} top-{k}", "", level, k, name) for level in levels for k in ks]
    columns = pd.DataFrame(rows, columns=["header", "set", "level", "k", "dataset"])
    return columns.assign(metric=columns.level + " top" + columns.k.astype(str))


@dataclass
class Comparison:
    title: str
    table: pd.DataFrame  # Source, Method, then the paper table's numbers
    paper: pd.DataFrame  # the published values shown (method, dataset, metric, value), for results.csv
    notes: list[str]


def compare(params: Params, acc: pd.DataFrame, paper: pd.DataFrame, baseline: pd.DataFrame | None = None) -> Comparison | None:
    """This run (and the baseline's accuracies, when given) beside the paper's table for this
    dataset and protocol; None for other datasets."""
    dataset = paper_dataset(params)
    if dataset is None:
        return None
    family = next(name for name in FAMILY_TABLE if dataset.startswith(name))
    main, protocol, labels, fused = FAMILY_TABLE[family], params.finetune.protocol, label_percent(params), "fused" in set(acc.set)
    table_v = protocol == "linear" or labels is not None  # Table V: linear (frozen encoders), semi (a label subset)
    columns, method = _columns("V" if table_v else main, dataset), run_method(params)
    ours = [(method, "")] + ([(f"{method} (+R)", "fused/")] if fused and not table_v else [])
    cells = [columns.assign(set=(prefix + columns.set).str.rstrip("/")).merge(acc, "left", on=["set", "level", "k"])
             .value.map(percent) for _, prefix in ours]
    published = columns.merge(paper, on=["dataset", "metric"])  # every paper value of these columns
    has = set(zip(published.table, published.method))
    notes = []

    def strongest(group: str, exclude: str, count: int) -> list[tuple[str, str]]:
        first = published[(published.table == main) & (published.group == group) & (published.method != exclude)
                          & (published.header == columns.header[0])]
        return [(main, name) for name in first.sort_values(["number", "method"], ascending=False).method.head(count)]

    if protocol in ("finetune", "semi") and not table_v:
        title = f"Table {main}: fine-tuning, {dataset} (accuracy in %)"
        rows = [(main, "Ours"), *([(main, "Ours (+R)")] if fused else [])]
        ablations = _ablations(params)
        if ablations and family != "MSASL":
            notes.append("The paper's ablations (Tables VII-XI) cover MS-ASL only; this run's ablated settings "
                         "have no published counterpart for this dataset.")
        for row in ablations if family == "MSASL" else []:
            if row not in has:
                notes.append(f"The paper has no ablation row for this run's setting {row[1]!r} (Table {row[0]}).")
            rows.append(row)
        rows += strongest("skeleton", "Ours", 3) + (strongest("fusion", "Ours (+R)", 2) if fused else [])
        notes.append(f"Baselines: the strongest pose-based methods of Table {main} by {columns.header[0]}"
                     + (", and the strongest RGB-fused (+R) ones." if fused else "."))
        if not fused:
            notes.append("This run has no fused (+R) metrics (evaluate.fusion_scores is null), so the paper's "
                         "RGB-fused rows are left out.")
    elif protocol == "scratch" and not table_v:
        title = f"Training from scratch, {dataset} (accuracy in %)"
        rows = [("VI", "pretrain data 0%")] if family == "MSASL" else []
        notes.append("The paper's Table VI row \"pretrain data 0%\" is the same model trained without pretraining; "
                     "\"Ours\" (pretrained, then fine-tuned) is shown for reference." if family == "MSASL" else
                     f"The paper publishes no from-scratch results for {dataset} (Table VI covers MS-ASL only); "
                     f"its pretrained and fine-tuned \"Ours\" (Table {main}) is shown for reference.")
        rows.append((main, "Ours"))
    else:
        share = labels or "100%"
        what = {"linear": "frozen encoders", "scratch": "no pretraining"}.get(protocol, "fine-tuned")
        title = f"Table V: {what}, {share} of the labels, {dataset} (top-1 accuracy in %)"
        counterpart = f"Ours {'linear' if protocol == 'linear' else 'semi'} {share}"
        if ("V", counterpart) not in has:
            notes.append(f"The paper publishes {'linear' if protocol == 'linear' else 'semi-supervised'} results for "
                         f"{'100%' if protocol == 'linear' else '20%, 40%, 60%'} of the labels only, not for {share} "
                         "(finetune.label_fraction).")
        elif protocol == "scratch":
            notes.append(f"The paper publishes no from-scratch result on {share} of the labels; \"{counterpart}\" "
                         "(pretrained, then fine-tuned on the same share) is its counterpart.")
        rows = [("V", counterpart), (main, "Ours")]
        notes.append(f"\"Ours\" from Table {main} (all labels, fully fine-tuned) is shown for reference.")
    rows = pd.DataFrame([row for row in rows if row in has], columns=["table", "method"])
    shown = rows.merge(published)  # in the order of `rows`, each row's values in the order of `columns`
    theirs = shown.pivot(index=["table", "method"], columns="header", values="value").reindex(
        index=pd.MultiIndex.from_frame(rows), columns=columns.header).fillna(DASH).reset_index()
    theirs = theirs.assign(table="paper, Table " + theirs.table).set_axis(["Source", "Method", *columns.header], axis=1)
    if baseline is not None:
        ours.append((BASELINE_METHOD, ""))
        cells.append(columns.merge(baseline, "left", on=["set", "level", "k"]).value.map(percent))
    mine = pd.DataFrame([["this run", name, *run] for (name, _), run in zip(ours, cells)], columns=theirs.columns)
    return Comparison(title, pd.concat([mine, theirs], ignore_index=True), shown[["method", "dataset", "metric", "value"]], notes)


def results_csv(params: Params, acc: pd.DataFrame, comparison: Comparison | None,
                baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy rows: this run's every metric (percent, 4 decimals), the baseline's, then the published values shown."""
    label, method = paper_dataset(params) or dataset_label(params), run_method(params)
    ours = acc[acc.k.isin(top_ks(acc))].reset_index(drop=True)
    methods = np.where(ours.set == "fused", f"{method} (+R)", method)
    if baseline is not None:
        theirs = baseline[baseline.k.isin(top_ks(acc))]
        ours = pd.concat([ours, theirs], ignore_index=True)
        methods = np.concatenate([methods, np.full(len(theirs), BASELINE_METHOD)])
    run = pd.DataFrame({
        "source": "this run", "method": methods,
        "dataset": [("NMFs-CSL total" if label == "NMFs-CSL" else label) if s in ("", "fused") else f"{label} {s}"
                    for s in ours.set],
        "metric": ours.level + " top" + ours.k.astype(str), "value": (100 * ours.value).map("{:.4f}".format)})
    if comparison is None:
        return run
    published = comparison.paper.drop_duplicates(["method", "dataset", "metric"]).assign(source="paper")
    return pd.concat([run, published[run.columns]], ignore_index=True)


def best_and_worst(per_class: pd.DataFrame, count: int = 5) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The per-class table as shown: every class, best first, when there are at most 2 * `count`,
    else the best `count` and the worst `count` (else None). Among equal accuracies the better-tested
    class comes first in both orders, so with many ties the same classes would top both lists: the
    worst are picked from the classes not shown as best."""
    ks = sorted(int(c[3:]) for c in per_class if c.startswith("top") and c[3:].isdigit())
    shown = pd.DataFrame({"Gloss": per_class.gloss, "Label": per_class.label, "Test samples": per_class.samples,
                          **{f"top-{k} (%)": per_class[f"top{k}"].map(percent) for k in ks}})
    order = ["top1", "samples", "gloss"]
    best = per_class.sort_values(order, ascending=[False, False, True], kind="stable").index
    if len(per_class) <= 2 * count:
        return shown.loc[best], None
    worst = per_class.drop(best[:count]).sort_values(order, ascending=[True, False, True], kind="stable").index
    return shown.loc[best[:count]], shown.loc[worst[:count]]
