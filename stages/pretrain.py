"""Stage `pretrain`: self-supervised pretraining of the joint and motion encoders (data/models/pretrain/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.data.corpus import read_corpus
from slrpipe.pretrain.train import KNN_METRIC, run_pretrain
from stages.common import PREPROCESS_DIR, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

CORPUS_DIR = Path("data/corpus")
OUT_DIR = Path("data/models/pretrain")
LIVE_DIR = Path("data/dvclive/pretrain")


def pretrain(
    params: Path = ParamsOption,
    corpus_dir: Path | None = ProjectPathOption(CORPUS_DIR, "The corpus stage's folder (corpus.csv, corpus_summary.json)."),
    preprocess_dir: Path | None = ProjectPathOption(PREPROCESS_DIR, "The preprocess stages' folder (<dataset>/dataset.h5)."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where the checkpoint goes (rewritten every epoch)."),
    live_dir: Path | None = ProjectPathOption(LIVE_DIR, "dvclive metrics and plots."),
    resume: bool = typer.Option(True, help="Continue from the last checkpoint when it was made with the same settings, data and code."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Pretrain the query/key encoders with contrast, consistency and knowledge transfer.

    Several GPUs or nodes: torchrun --nproc-per-node=N -m stages.pretrain
    """
    corpus_dir = in_project(params, corpus_dir, CORPUS_DIR)
    preprocess_dir = in_project(params, preprocess_dir, PREPROCESS_DIR)
    out_dir = in_project(params, out_dir, OUT_DIR)
    live_dir = in_project(params, live_dir, LIVE_DIR)
    setup_logging(verbose)
    with user_errors():
        result = run_pretrain(load_params(params), read_corpus(corpus_dir, preprocess_dir), out_dir, live_dir, resume)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.last_metrics.items() if k in ("train/loss/total", KNN_METRIC))
    typer.echo(f"pretrain: {result.epochs_run} epochs run ({shown}) -> {result.checkpoint}")


if __name__ == "__main__":
    standalone(pretrain)()
