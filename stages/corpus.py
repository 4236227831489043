"""Stage `corpus`: which samples of which datasets pretraining reads (data/corpus/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.data.corpus import assemble_corpus, write_corpus
from stages.common import PREPROCESS_DIR, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

OUT_DIR = Path("data/corpus")


def corpus(
    params: Path = ParamsOption,
    preprocess_dir: Path | None = ProjectPathOption(PREPROCESS_DIR, "The preprocess stages' folder (<dataset>/dataset.h5)."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR, "Where corpus.csv and corpus_summary.json go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """List the pretraining samples: pretrain.corpus's members (their pretrain_splits), less any
    target's test content, pretrain.corpus_fraction of each (seeded, nested)."""
    preprocess_dir = in_project(params, preprocess_dir, PREPROCESS_DIR)
    out_dir = in_project(params, out_dir, OUT_DIR)
    setup_logging(verbose)
    with user_errors():
        result = assemble_corpus(load_params(params), preprocess_dir)
        write_corpus(result, out_dir)
    members = ", ".join(f"{name} {m['chosen']}" for name, m in result.summary["members"].items())
    typer.echo(f"corpus: {len(result.samples)} samples ({members}; {result.summary['unlabelled']} unlabelled) -> {out_dir}")


if __name__ == "__main__":
    standalone(corpus)()
