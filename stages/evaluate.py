"""Stage `evaluate`: test-set scores and the paper's metrics (reports/eval/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.evaluation.evaluate import run_evaluate
from stages.common import ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

MODEL = Path("data/models/finetune/best.pt")
DATASET = Path("data/preprocess/dataset.h5")
OUT_DIR = Path("reports/eval")


def evaluate(
    params: Path = ParamsOption,
    model: Path | None = ProjectPathOption(MODEL, "The finetune stage's model file."),
    dataset: Path | None = ProjectPathOption(DATASET, "The preprocess stage's dataset file."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where scores, metrics, per-class and per-signer tables and confusion pairs go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score the test split and compute P-I / P-C top-k accuracy (and fused "+R" metrics when configured)."""
    model = in_project(params, model, MODEL)
    dataset = in_project(params, dataset, DATASET)
    out_dir = in_project(params, out_dir, OUT_DIR)
    setup_logging(verbose)
    with user_errors():
        result = run_evaluate(load_params(params), model, dataset, out_dir)
    def bounds(name: str) -> str:
        low, high = (result.intervals.get(f"{name}_ci_{end}") for end in ("low", "high"))
        return "" if low is None else f" [{low:.4f}, {high:.4f}]"

    shown = ", ".join(f"{k} {v:.4f}{bounds(k)}" for k, v in result.metrics.items() if k.count("/") == 2)  # test/<level>/top<k>
    typer.echo(f"evaluate: {result.samples} test samples, {shown} -> {out_dir}")


if __name__ == "__main__":
    standalone(evaluate)()
