"""Stage `evaluate`: test-set scores and the paper's metrics (reports/eval/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.evaluate import run_evaluate
from stages.common import (DatasetFileOption, ParamsOption, ProjectPathOption, TargetOption, in_project, setup_logging,
                           standalone, target_dataset, target_name, user_errors)

MODELS_DIR = Path("data/models/finetune")  # + /<target>/best.pt
OUT_DIR = Path("reports/eval")  # + /<target>


def evaluate(
    params: Path = ParamsOption,
    target: str | None = TargetOption,
    model: Path | None = ProjectPathOption(MODELS_DIR / "<target>" / "best.pt", "The finetune stage's model file."),
    dataset: Path | None = DatasetFileOption,
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<target>", "Where scores, metrics, per-class and per-signer tables and confusion pairs go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score the test split and compute P-I / P-C top-k accuracy (and fused "+R" metrics when configured)."""
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = target_name(settings.finetune.targets, target)
        model = in_project(params, model, MODELS_DIR / name / "best.pt")
        dataset = target_dataset(params, dataset, name)
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        result = run_evaluate(settings, model, dataset, out_dir, name)
    def bounds(name: str) -> str:
        low, high = (result.intervals.get(f"{name}_ci_{end}") for end in ("low", "high"))
        return "" if low is None else f" [{low:.4f}, {high:.4f}]"

    shown = ", ".join(f"{k} {v:.4f}{bounds(k)}" for k, v in result.metrics.items() if k.count("/") == 2)  # test/<level>/top<k>
    typer.echo(f"evaluate {name}: {result.samples} test samples, {shown} -> {out_dir}")


if __name__ == "__main__":
    standalone(evaluate)()
