"""Stage `preprocess`: keypoints -> normalized hand/trunk dataset with splits (data/preprocess/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.data.preprocess import run_preprocess
from stages.common import DatasetOption, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

EXTRACT_DIR = Path("data/extract")  # + /<dataset>/keypoints.h5
OUT_DIR = Path("data/preprocess")  # + /<dataset>


def preprocess(
    params: Path = ParamsOption,
    dataset: str | None = DatasetOption,
    keypoints: Path | None = ProjectPathOption(EXTRACT_DIR / "<dataset>" / "keypoints.h5", "The extract stage's keypoints file."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<dataset>", "Where dataset.h5, label subsets and the report go."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Crop and normalize hands and trunk, assign splits and semi-supervised label subsets."""
    setup_logging(verbose)
    with user_errors():
        name = load_params(params).dataset_name(dataset)
        keypoints = in_project(params, keypoints, EXTRACT_DIR / name / "keypoints.h5")
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        result = run_preprocess(load_params(params), keypoints, out_dir)
    splits = ", ".join(f"{name} {count}" for name, count in result.split_counts.items())
    typer.echo(f"preprocess: {result.written} samples ({splits}), {result.frames} frames, {len(result.problems)} bad"
               f"{f', {len(result.trunk_fallback)} with the frame-form trunk (no confident shoulders)' if result.trunk_fallback else ''}"
               f" -> {out_dir}")


if __name__ == "__main__":
    standalone(preprocess)()
