"""Stage `report`: this run's results beside the paper's, per target, with the pretraining corpus,
t-SNE and training curves (reports/)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.report import TargetDirs, run_reports
from stages.common import PREPROCESS_DIR, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

EVAL_DIR = Path("reports/eval")  # + /<target>
BASELINE_DIR = Path("reports/baseline")  # + /<target>
CORPUS_SUMMARY = Path("data/corpus/corpus_summary.json")
LIVE_DIR = Path("data/dvclive")  # pretrain/, finetune/<target>/
OUT_DIR = Path("reports")


def report(
    params: Path = ParamsOption,
    eval_dir: Path | None = ProjectPathOption(EVAL_DIR, "The evaluate stages' folder (<target>/metrics.json, per_class.csv, ...)."),
    baseline_dir: Path | None = ProjectPathOption(BASELINE_DIR, "The baseline stages' folder (<target>/metrics.json, scores.csv)."),
    preprocess_dir: Path | None = ProjectPathOption(PREPROCESS_DIR, "The preprocess stages' folder (<dataset>/preprocess_summary.json)."),
    corpus_summary: Path | None = ProjectPathOption(CORPUS_SUMMARY, "The corpus stage's summary."),
    live_dir: Path | None = ProjectPathOption(LIVE_DIR, "The dvclive folder holding pretrain/ and finetune/<target>/ curves."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where results.md, results.csv and figures/ go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Render results.md and results.csv: the pretraining corpus, then each target's numbers in the
    layout of the paper's tables with the published numbers beside them, a t-SNE of its test
    embeddings and the training curves."""
    eval_dir = in_project(params, eval_dir, EVAL_DIR)
    baseline_dir = in_project(params, baseline_dir, BASELINE_DIR)
    preprocess_dir = in_project(params, preprocess_dir, PREPROCESS_DIR)
    corpus_summary = in_project(params, corpus_summary, CORPUS_SUMMARY)
    live_dir = in_project(params, live_dir, LIVE_DIR)
    out_dir = in_project(params, out_dir, OUT_DIR)
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        targets = {name: TargetDirs(eval_dir / name, preprocess_dir / name,
                                    {"pretrain": live_dir / "pretrain", "finetune": live_dir / "finetune" / name},
                                    baseline_dir / name)
                   for name in settings.finetune.targets}
        corpus = json.loads(corpus_summary.read_text(encoding="utf-8")) if corpus_summary.is_file() else None
        path = run_reports(settings, targets, corpus, out_dir)
    typer.echo(f"report: {path}, {out_dir / 'results.csv'}, {out_dir / 'figures'}/")


if __name__ == "__main__":
    standalone(report)()
