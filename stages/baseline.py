"""Stage `baseline`: the logistic-regression baseline on the same splits as the deep model (reports/baseline/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.baseline import run_baseline
from stages.common import ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

DATASET = Path("data/preprocess/dataset.h5")
OUT_DIR = Path("reports/baseline")


def baseline(
    params: Path = ParamsOption,
    dataset: Path | None = ProjectPathOption(DATASET, "The preprocess stage's dataset file."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where the baseline's scores.csv and metrics.json go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fit a logistic regression on body-normalized joints of the training split (C chosen on
    validation) and score the test split, as results.md's baseline row."""
    dataset = in_project(params, dataset, DATASET)
    out_dir = in_project(params, out_dir, OUT_DIR)
    setup_logging(verbose)
    with user_errors():
        result = run_baseline(load_params(params), dataset, out_dir)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.count("/") == 2)
    typer.echo(f"baseline (logistic regression, C = {result.C:g}): {result.samples} test samples, {shown} -> {out_dir}")


if __name__ == "__main__":
    standalone(baseline)()
