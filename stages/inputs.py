"""Stage `inputs`: digests of the files a dataset references outside dataset.root (data/inputs/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.pose.inputs import run_inputs
from stages.common import ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

OUT = Path("data/inputs/digests.csv")


def inputs(
    params: Path = ParamsOption,
    out: Path | None = ProjectPathOption(OUT, "Where the table of paths and content digests goes."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Hash every file the dataset names outside dataset.root (a manifest's clips and pose files),
    so that DVC reruns extract when one of them changes."""
    out = in_project(params, out, OUT)
    setup_logging(verbose)
    with user_errors():
        result = run_inputs(load_params(params), out)
    typer.echo(f"inputs: {result.referenced} of {result.samples} samples' files lie outside dataset.root, hashed -> {out}")


if __name__ == "__main__":
    standalone(inputs)()
