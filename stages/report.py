"""Stage `report`: this run's results beside the paper's, with t-SNE and training curves (reports/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.report import run_report
from stages.common import ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

EVAL_DIR = Path("reports/eval")
BASELINE_DIR = Path("reports/baseline")
PREPROCESS_DIR = Path("data/preprocess")
LIVE_DIR = Path("data/dvclive")
OUT_DIR = Path("reports")


def report(
    params: Path = ParamsOption,
    eval_dir: Path | None = ProjectPathOption(EVAL_DIR, "The evaluate stage's folder (metrics.json, per_class.csv, per_signer.csv, embeddings.npz)."),
    baseline_dir: Path | None = ProjectPathOption(BASELINE_DIR, "The baseline stage's folder (metrics.json, scores.csv)."),
    preprocess_dir: Path | None = ProjectPathOption(PREPROCESS_DIR, "The preprocess stage's folder (preprocess_summary.json, dataset.h5)."),
    live_dir: Path | None = ProjectPathOption(LIVE_DIR, "The dvclive folder holding pretrain/ and finetune/ curves."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where results.md, results.csv and figures/ go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Render results.md and results.csv: this run's numbers in the layout of the paper's tables,
    the published numbers beside them, a t-SNE of the test embeddings and the training curves."""
    eval_dir = in_project(params, eval_dir, EVAL_DIR)
    baseline_dir = in_project(params, baseline_dir, BASELINE_DIR)
    preprocess_dir = in_project(params, preprocess_dir, PREPROCESS_DIR)
    live_dir = in_project(params, live_dir, LIVE_DIR)
    out_dir = in_project(params, out_dir, OUT_DIR)
    setup_logging(verbose)
    with user_errors():
        live_dirs = {stage: live_dir / stage for stage in ("pretrain", "finetune")}
        path = run_report(load_params(params), eval_dir, preprocess_dir, live_dirs, out_dir, baseline_dir)
    typer.echo(f"report: {path}, {out_dir / 'results.csv'}, {out_dir / 'figures'}/")


if __name__ == "__main__":
    standalone(report)()
