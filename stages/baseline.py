"""Stage `baseline`: the logistic-regression baseline on the same splits as the deep model (reports/baseline/<target>/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.baseline import run_baseline
from stages.common import (DatasetFileOption, ParamsOption, ProjectPathOption, TargetOption, in_project, setup_logging,
                           standalone, target_dataset, target_name, user_errors)

OUT_DIR = Path("reports/baseline")  # + /<target>


def baseline(
    params: Path = ParamsOption,
    target: str | None = TargetOption,
    dataset: Path | None = DatasetFileOption,
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<target>", "Where the baseline's scores.csv and metrics.json go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fit a logistic regression on body-normalized joints of the training split (C chosen on
    validation) and score the test split, as results.md's baseline row."""
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = target_name(settings.finetune.targets, target)
        dataset = target_dataset(params, dataset, name)
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        result = run_baseline(settings, dataset, out_dir, name)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.count("/") == 2)
    typer.echo(f"baseline {name} (logistic regression, C = {result.C:g}): {result.samples} test samples, {shown} -> {out_dir}")


if __name__ == "__main__":
    standalone(baseline)()
