"""Stage `inputs`: digests of the files a dataset references outside its root (data/inputs/<dataset>/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.pose.inputs import run_inputs
from stages.common import DatasetOption, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

OUT_DIR = Path("data/inputs")  # + /<dataset>/digests.csv


def inputs(
    params: Path = ParamsOption,
    dataset: str | None = DatasetOption,
    out: Path | None = ProjectPathOption(OUT_DIR / "<dataset>" / "digests.csv", "Where the table of paths and content digests goes."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Hash every file the dataset names outside its root (datasets.<name>.root: a manifest's clips and
    pose files), so that DVC reruns its extract when one of them changes."""
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = settings.dataset_name(dataset)
        out = in_project(params, out, OUT_DIR / name / "digests.csv")
        result = run_inputs(settings, out, name)
    typer.echo(f"inputs {name}: {result.referenced} of {result.samples} samples' files lie outside datasets.{name}.root, "
               f"hashed -> {out}")


if __name__ == "__main__":
    standalone(inputs)()
