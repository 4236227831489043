"""Stage `extract`: dataset -> 49 keypoints per frame (data/extract/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.pose.extract import Shard, merge_shards, run_extract
from stages.common import DatasetOption, ParamsOption, ProjectPathOption, in_project, setup_logging, standalone, user_errors

OUT_DIR = Path("data/extract")  # + /<dataset>
CACHE_DIR = Path("data/cache/extract")


def extract(
    params: Path = ParamsOption,
    dataset: str | None = DatasetOption,
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<dataset>", "Where the keypoints file, manifest and report go."),
    cache_dir: Path | None = ProjectPathOption(CACHE_DIR, "Per-video results, reused by resumed and repeated runs."),
    shard: str | None = typer.Option(None, help="Process only shard INDEX/COUNT (0-based), e.g. 3/8; join with extract-merge."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Extract whole-body keypoints from the dataset's videos or import its pose files."""
    cache_dir = in_project(params, cache_dir, CACHE_DIR)
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = settings.dataset_name(dataset)
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        result = run_extract(settings, out_dir, cache_dir, Shard.parse(shard) if shard else None, name)
    typer.echo(f"extract: {result.extracted} samples, {result.frames} frames, {len(result.problems)} bad -> {out_dir}")


def extract_merge(
    shards: int = typer.Option(..., min=1, help="How many shards were run."),
    params: Path = ParamsOption,
    dataset: str | None = DatasetOption,
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<dataset>", "The --out-dir the shards wrote to."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Join the outputs of `extract --shard K/N` runs into the stage's outputs."""
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = settings.dataset_name(dataset)
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        result = merge_shards(settings, out_dir, shards, name)
    typer.echo(f"extract-merge: {result.extracted} samples from {shards} shards, {len(result.problems)} bad -> {out_dir}")


if __name__ == "__main__":
    standalone(extract)()
