"""results.md: the tables rendered as markdown and the sentences that say what they show, filled into
the page's fixed text, results_template.md (package data)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import yaml

from slrpipe.config import Params
from slrpipe.evaluation.report.figures import BRANCHES, CURVES_PNG, TSNE_PNG
from slrpipe.evaluation.compare import PairedComparison
from slrpipe.evaluation.report.tables import (DASH, Comparison, Inputs, accuracies, best_and_worst, bracket, dataset_label,
                                              intervals, label_percent, percent, run_table, set_intervals, top_ks)

NO_PUBLISHED = "No published numbers exist for this dataset"
PUBLISHED_FOR = "MS-ASL (100/200/1000 classes), WLASL (100/300/2000), NMFs-CSL and SLR500"
PROTOCOLS = {
    "finetune": "finetune: the pretrained encoders and the classifier are trained",
    "linear": "linear: the pretrained encoders are frozen; only the linear classifier is trained",
    "semi": "semi: the pretrained encoders and the classifier are trained",
    "scratch": "scratch: the same model trained from a random initialisation, without pretraining",
    "baseline": "baseline: no encoder; a logistic regression on body-normalized, time-resampled joint coordinates",
}


def markdown_table(frame: pd.DataFrame, left: int = 1) -> str:
    """`frame` as a markdown table: its first `left` columns left-aligned, the others (numbers) right-aligned."""
    def line(cells: Sequence) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    align = "|" + "|".join("---" if i < left else "---:" for i in range(frame.shape[1])) + "|"
    return "\n".join([line(frame.columns), align, *(line(row) for row in frame.itertuples(index=False))])


def relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def missing_why(params: Params, missing_curves: dict[str, Path]) -> dict[str, str]:
    """Why a stage's curves are missing, one line per reason, keyed by stage."""
    protocol = params.finetune.protocol
    return {stage: f"no pretraining curves:\nprotocol {protocol} trains without pretraining"
            if stage == "pretrain" and protocol in ("scratch", "baseline") else
            "no pretraining curves:\npretrain.corpus_fraction is 0 (no pretraining)"
            if stage == "pretrain" and params.pretrain.corpus_fraction == 0 else
            f"no {'pretraining' if stage == 'pretrain' else 'fine-tuning'} curves found\n({relative(where)})"
            for stage, where in missing_curves.items()}


def schedule(lr: float, gamma: float, steps: Sequence[int], epochs: int) -> str:
    """The lr schedule as it ran: a MultiStepLR milestone at or past the last epoch never fires."""
    taken, unreached = [m for m in steps if m < epochs], [m for m in steps if m >= epochs]
    text = (f"{lr:g} (x{gamma:g} after epoch{'s' if len(taken) > 1 else ''} {', '.join(map(str, taken))}"
            if taken else f"{lr:g} (constant")
    return text + (f"; lr_steps {', '.join(map(str, unreached))} not reached in {epochs} epochs" if unreached else "") + ")"


def selection_text(metrics: dict, epochs: int) -> str:
    """How the evaluated epoch was chosen, from metrics.json's `selected` (written by evaluate from the model file)."""
    selected = metrics.get("selected")
    if not isinstance(selected, dict) or "epoch" not in selected:
        return "not recorded in the model file (made by an older slrpipe): rerun `dvc repro finetune`"
    epoch = f"epoch {selected['epoch']} of {epochs}"
    if "test" in selected:
        return (f"selected on test (authors' protocol, optimistic): {epoch}, the best test top-1 during training "
                f"({percent(selected['test'].get('top1'))} %) (`finetune.select: test`)")
    if "val" in selected:
        return f"{epoch}, the best validation top-1 ({percent(selected['val'].get('top1'))} %) (`finetune.select: val`)"
    return f"{epoch}, the last (`finetune.select: last`)"


def baseline_selection_text(metrics: dict) -> str:
    """How the baseline's regularization was chosen, from metrics.json's `selected`."""
    selected = metrics.get("selected")
    if isinstance(selected, dict) and isinstance(selected.get("val"), dict):
        return f"C of the logistic regression by the best validation top-1 ({percent(selected['val'].get('top1'))} %)"
    return "C of the logistic regression at its default (no validation split)"


def _split_text(params: Params) -> str:
    p, source = params.preprocess, params.dataset().source
    how = "by signer (no signer in two splits)" if p.split == "signer" else "random, class-stratified"
    if source in ("wlasl", "msasl"):
        return "the dataset's official split"
    if source in ("nmfs_csl", "slr500"):  # official train and test only
        return (f"the dataset's official train/test split; validation: {p.val_fraction:.0%} of the training samples, "
                f"drawn {how}, seed {p.seed} (`preprocess.split: {p.split}`)")
    return (f"seeded split {how}, seed {p.seed}, validation {p.val_fraction:.0%}, test {p.test_fraction:.0%}"
            f" (`preprocess.split: {p.split}`)" + ("; rows the manifest marks test or val keep their split, rows marked "
            "train become train or validation (validation only when the manifest marks none)" if source == "manifest" else ""))


def _what_was_run(params: Params, inputs: Inputs, ks: list[int]) -> pd.DataFrame:
    d, f, pre, s, size = params.dataset(), params.finetune, params.pretrain, inputs.summary, params.model.chosen
    test_classes = len(np.unique(inputs.labels))
    classes = len(inputs.glosses) if inputs.glosses else d.num_classes
    sizes = ", ".join(f"{name} {s[f'{name}_samples']}" for name in ("train", "val", "test") if f"{name}_samples" in s)
    bad = (f"; {s['bad']} of {s['samples'] + s['bad']} samples left out by preprocessing (no usable frame)"
           if s.get("bad") and "samples" in s else "")
    key = label_percent(params)
    count = (len(inputs.subsets[key]) if inputs.subsets and key in inputs.subsets else s.get(f"labelled_{key}")) if key else None
    labels = "; all training labels" if key is None else (
        f"; {key} of the training labels" + (f" ({count} labelled samples)" if count is not None else ""))
    on = {True: "on", False: "off"}
    rows = {
        "Dataset": f"{dataset_label(params)} (source `{d.source}`, root `{relative(d.root)}`)",
        "Classes": f"{classes} classes, {test_classes} of them in the test split" if classes else
                   f"{test_classes} classes in the test split",
        "Split": _split_text(params),
        "Split sizes": f"{sizes or 'unknown'}{bad}",
        "Protocol": PROTOCOLS[f.protocol] + labels,
        "Branches / parts": f"{f.branches} / {f.parts}",
        "Model size": (f"`{params.model.size}` (joint GCN {list(size.joint_channels)}, part GCN {list(size.part_channels)}, "
                       f"feature width {size.width}; hand Transformer {size.hand_layers} x {size.hand_heads} heads, "
                       f"trunk Transformer {size.trunk_layers} x {size.trunk_heads} heads)"),
        "Pretraining": f"none (protocol {f.protocol})" if f.protocol in ("scratch", "baseline") else
                       "none (`pretrain.corpus_fraction: 0`): the encoders started from random initialisation"
                       if pre.corpus_fraction == 0 else (
            f"{pre.epochs} epochs on {', '.join(pre.corpus)} ({pre.corpus_fraction:g} of the corpus), branches {pre.branches}, parts {pre.parts}, consistency {on[pre.use_consistency]}, "
            f"knowledge transfer {on[pre.use_knowledge_transfer]}, lambda_J {pre.lambda_joint:g}, lambda_M "
            f"{pre.lambda_motion:g}, batch {pre.batch_size}, lr {schedule(pre.lr, pre.lr_gamma, pre.lr_steps, pre.epochs)}"),
        **({"Fine-tuning": "none: the logistic regression is fitted on the training split",
            "Model selection": baseline_selection_text(inputs.metrics)} if f.protocol == "baseline" else {
            "Fine-tuning": (f"{f.schedule.epochs} epochs, lr {schedule(f.lr, f.lr_gamma, f.schedule.lr_steps, f.schedule.epochs)}, "
                            f"batch {f.batch_size}, branch logits combined by {f.combine}"),
            "Model selection": selection_text(inputs.metrics, f.schedule.epochs)}),
        "Evaluated": (f"{inputs.metrics.get('samples', len(inputs.labels))} test samples, "
                      f"{', '.join(f'top-{k}' for k in ks)}; P-I = per instance, P-C = mean over classes"),
    }
    return pd.DataFrame(rows.items(), columns=["", ""])


def _per_class(per_class: pd.DataFrame, link: str) -> list[str]:
    """The per-class section's paragraphs."""
    if per_class.empty:
        return ["No per-class results (per_class.csv is empty)."]
    best, worst = best_and_worst(per_class)
    if worst is None:
        return [f"All {len(per_class)} test classes, best first:", markdown_table(best, 2)]
    return [(f"{len(per_class)} test classes; {(per_class.top1 == 1).sum()} recognized perfectly (top-1 100 %), "
             f"{(per_class.top1 == 0).sum()} never (top-1 0 %). Ties are broken by the number of test samples. "
             f"All classes: [{Path(link).name}]({link})."),
            "Best 5 classes:", markdown_table(best, 2), "Worst 5 classes:", markdown_table(worst, 2)]


# Below this many test signers the interval over signers rests on too few draws of people to be more than a rough guide.
FEW_SIGNERS = 5


def _interval_text(params: Params, metrics: dict, per_signer: pd.DataFrame) -> str:
    """What the brackets of this run's table are, and the intervals over signers or why there are none."""
    if not intervals(metrics):
        return ""
    e = params.evaluate
    text = (f"In brackets: the 95 % bootstrap interval over the {metrics.get('samples', 'test')} test samples "
            f"({e.bootstrap_draws} resamples, seed {e.bootstrap_seed}).")
    by_signer = intervals(metrics, "signer_ci")
    if by_signer:
        shown = ", ".join(f"{level} top-{k} {bracket(bounds)}" for (level, k), bounds in by_signer.items())
        count = metrics.get("signers", len(per_signer))
        rough = f" With {count} signers this interval is itself rough." if count < FEW_SIGNERS else ""
        return (f"{text} Resampling the {count} test signers instead, whole signers and then the samples within each "
                f"(the interval that speaks for new signers): {shown}.{rough}")
    if len(per_signer) == 1:
        return (f"{text} The test samples all come from one signer ({per_signer.signer.iloc[0]}), so there is no "
                "interval over signers: the one above counts samples, not signers, and understates how much the "
                "accuracy may vary on new signers.")
    return f"{text} The test samples have no signer ids, so there is no interval over signers." if per_signer.empty else text


# Up to this many signers are listed one by one; more are summarized, with the lowest listed.
SIGNERS_LISTED = 20


def _per_signer(per_signer: pd.DataFrame, link: str) -> list[str]:
    """The per-signer section's paragraphs."""
    if per_signer.empty:
        return ["No per-signer results: the test samples have no signer ids (per_signer.csv has no rows)."]
    shown = pd.DataFrame({"Signer": per_signer.signer, "Test samples": per_signer.samples,
                          "top-1 (%)": per_signer.top1.map(percent)})
    if len(per_signer) <= SIGNERS_LISTED:
        whom = "the test signer" if len(per_signer) == 1 else f"each of the {len(per_signer)} test signers"
        return [f"P-I top-1 of {whom}:", markdown_table(shown)]
    lowest = per_signer.sort_values(["top1", "samples", "signer"], ascending=[True, False, True], kind="stable").index
    return [(f"{len(per_signer)} test signers; P-I top-1 from {percent(per_signer.top1.min())} to "
             f"{percent(per_signer.top1.max())} % (median {percent(per_signer.top1.median())} %). "
             f"All signers: [{Path(link).name}]({link})."),
            f"The {SIGNERS_LISTED // 2} lowest:", markdown_table(shown.loc[lowest[:SIGNERS_LISTED // 2]])]


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain values on one line ([640, 480]), as params.yaml writes them."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(not isinstance(item, (list, dict)) for item in data)))


def _params_yaml(params: Params) -> str:
    data = params.model_dump(mode="json")
    for name, dataset in params.datasets.items():
        data["datasets"][name]["root"] = relative(dataset.root)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def _after_run_table(params: Params, metrics: dict, comparison: Comparison | None) -> list[str]:
    """The paragraphs after this run's table: the paper's numbers beside it, or why there are none."""
    selected = metrics.get("selected")
    out = [("The model was selected on test (authors' protocol, optimistic): the epoch with the best test top-1, so these "
            "test numbers are not an unbiased estimate.")] if isinstance(selected, dict) and "test" in selected else []
    if comparison is None:
        return out + [f"{NO_PUBLISHED}: the paper reports {PUBLISHED_FOR} only, so this run's numbers above "
                      "(in the layout of its Tables I-II) stand alone."]
    out += [f"### Compared with the paper: {comparison.title}", markdown_table(comparison.table, 2),
            ("The paper's numbers are as published in Zhao et al., IEEE TIP 2024 (P-I = per instance, "
             f"P-C = per class); {DASH} = not reported."), "\n".join(f"- {note}" for note in comparison.notes)]
    if params.model.size != "paper":
        out.append(f"This run used model size `{params.model.size}`, not the paper's; "
                   f"pretraining ran {params.pretrain.epochs} epochs (paper: 150).")
    return out


def _figures(inputs: Inputs, figures_why: dict[str, str | None], missing: dict[str, str]) -> list[str]:
    """The figures section's paragraphs: each figure or why it is missing, and why curves are missing.
    `figures_why`: the t-SNE's path, then the curves' (relative to results.md) -> why not drawn (None: drawn)."""
    (tsne, tsne_why), (curves, curves_why) = figures_why.items()
    if tsne_why is None:
        branches = [b for b in BRANCHES if b in inputs.embeddings]
        which = ("joint-only, motion-only and combined (both L2-normalized, concatenated)" if len(branches) == 2
                 else f"{branches[0]}-only: the model has no {'motion' if branches[0] == 'joint' else 'joint'} branch")
        out = [f"t-SNE of the test embeddings, {which}; coloured by class (the paper's Fig. 3):",
               f"![t-SNE of test embeddings]({tsne})"]
    else:
        out = [f"No t-SNE figure: {tsne_why}."]
    out.append("\n".join(f"- {missing[stage].replace(chr(10), ' ')}." for stage in ("pretrain", "finetune") if stage in missing))
    if curves_why is None:
        return out + ["Training curves:", f"![Training curves]({curves})"]
    return out + [f"No training-curve figure: {curves_why}."]


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def paired_text(name: str, found: PairedComparison) -> str:
    """One paragraph: this run's top-1 minus another model's on the same test samples, with its paired intervals."""
    parts = []
    for level, short in (("per_instance", "P-I"), ("per_class", "P-C")):
        difference, low, high = found.difference[level]
        text = f"{short} top-1 {_points(difference)} points [{_points(low)}, {_points(high)}]"
        if found.signer_difference is not None:
            _, low, high = found.signer_difference[level]
            text += f" ([{_points(low)}, {_points(high)}] over the {found.signers} test signers)"
        parts.append(text)
    return (f"**This run minus {name}**, on the same {found.samples} test samples: {'; '.join(parts)} "
            f"(paired bootstrap: both models scored on the same resamples). {found.verdict('This run', name)}.")


def _baseline_text(params: Params, baseline: dict | None, paired: dict[str, PairedComparison]) -> list[str]:
    """What the baseline row is, and this run against it and against the reference run."""
    out = []
    if baseline is not None:
        selected = baseline.get("selected") if isinstance(baseline.get("selected"), dict) else {}
        chosen = (f"C = {selected['C']:g}, chosen by validation top-1" if "C" in selected and "val" in selected
                  else f"C = {selected['C']:g}" if "C" in selected else "")
        out.append("The baseline row: a logistic regression (scikit-learn) on the body-normalized (shoulder midpoint, "
                   "shoulder width), time-resampled joint coordinates of the hands and trunk, fitted on the same "
                   f"training split and scored on the same test split (`reports/baseline/`{', ' + chosen if chosen else ''}). "
                   "A deep model that does not beat it has learned nothing a linear model on the raw joints could not.")
    out += [paired_text(name, found) for name, found in paired.items()]
    return out


def _paragraphs(texts: list[str]) -> str:  # an empty text (no notes, say) leaves no blank paragraph
    return "\n\n".join(text for text in texts if text)


def _template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def render_target(params: Params, inputs: Inputs, acc: pd.DataFrame, comparison: Comparison | None,
                  figures_why: dict[str, str | None], missing: dict[str, str], per_class_link: str,
                  baseline: dict | None = None, paired: dict[str, PairedComparison] | None = None) -> str:
    """One target's sections (target_template.md filled in), for `params` narrowed to that dataset.
    `figures_why` as in _figures; `missing`: stage -> why its curves are missing; `baseline`: the
    baseline stage's test metrics (with `selected`), shown as a row of this run's table; `paired`:
    name -> this run minus that model on the same test samples."""
    table = run_table(acc, intervals(inputs.metrics), {k: v for k, v in set_intervals(inputs.metrics).items() if k},
                      (accuracies(baseline), intervals(baseline)) if baseline is not None else None)
    return _template("target_template.md").substitute(
        what_was_run=markdown_table(_what_was_run(params, inputs, top_ks(acc)), 2),
        run_table=markdown_table(table),
        after_run_table=_paragraphs([_interval_text(params, inputs.metrics, inputs.per_signer),
                                     *_baseline_text(params, baseline, paired or {}),
                                     *_after_run_table(params, inputs.metrics, comparison)]),
        figures=_paragraphs(_figures(inputs, figures_why, missing)),
        per_class=_paragraphs(_per_class(inputs.per_class, per_class_link)),
        per_signer=_paragraphs(_per_signer(inputs.per_signer, Path(per_class_link).with_name("per_signer.csv").as_posix())),
    ).rstrip()


def demote(markdown: str) -> str:
    """Every heading one level down (a target's sections under its own heading on a page of several)."""
    inside_code = False
    lines = []
    for line in markdown.splitlines():
        inside_code ^= line.startswith("```")
        lines.append("#" + line if line.startswith("#") and not inside_code else line)
    return "\n".join(lines)


def corpus_table(summary: dict) -> str:
    """The pretraining corpus as the corpus stage summarized it: a row per member, then the total."""
    rows = [(name, "no" if not m["labelled"] else "yes", " + ".join(m["splits"]), m["samples"], m["eligible"],
             m["test_duplicates"], m["chosen"]) for name, m in summary["members"].items()]
    rows.append(("total", "", "", sum(r[3] for r in rows), sum(r[4] for r in rows), sum(r[5] for r in rows), summary["samples"]))
    frame = pd.DataFrame(rows, columns=["Dataset", "Labelled", "Splits used", "Samples", "In those splits",
                                        "Left out (a target's test content)", "Pretrained on"])
    fraction = summary["fraction"]
    head = (f"Pretraining read {summary['samples']} samples ({summary['unlabelled']} of them unlabelled), "
            f"`pretrain.corpus_fraction: {fraction:g}` of each member's samples (seeded, nested)."
            if fraction else "No pretraining: `pretrain.corpus_fraction: 0`; fine-tuning started from random initialisation.")
    monitor = summary.get("monitor", {}).get("dataset")
    tail = f"The kNN monitor (`val/knn_top1`) used {monitor}'s training and validation splits." if monitor and fraction else ""
    return _paragraphs([head, markdown_table(frame, 3), tail])


def render_page(params: Params, sections: dict[str, str], corpus: dict | None) -> str:
    """results.md: the corpus table, then each target's sections (one target: at the page's level;
    several: each under its own heading), then the params."""
    protocol = params.finetune.protocol
    if len(sections) == 1:
        title, body = f"{next(iter(sections))}, protocol {protocol}", next(iter(sections.values()))
    else:
        title = f"{', '.join(sections)}, protocol {protocol}"
        body = "\n\n".join(f"## {label}\n\n{demote(text)}" for label, text in sections.items())
    return _template("results_template.md").substitute(
        title=title,
        corpus=corpus_table(corpus) if corpus else "Not recorded (no corpus summary given).",
        targets=body,
        params_yaml=_params_yaml(params).rstrip())
