"""`slrpipe show SAMPLE`: draw one preprocessed sample (trunk, hand boxes, both hand crops) to check the crops."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from slrpipe.evaluation.show import render_sample
from stages.common import setup_logging, standalone, user_errors

DATASET = Path("data/preprocess/dataset.h5")
OUT_DIR = Path("reports/show")


def default_out(sample: str) -> Path:
    """reports/show/<sample id as one file name>.png ('MP_Data/bad/0' -> 'MP_Data_bad_0.png')."""
    return OUT_DIR / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', sample).strip('_.') or 'sample'}.png"


def show(
    sample: str = typer.Argument(..., help="The sample id, as in the dataset (e.g. MP_Data/bad/0)."),
    dataset: Path = typer.Option(DATASET, help="The preprocess stage's dataset file."),
    out: Path | None = typer.Option(None, help="A .png (a strip of frames) or .gif (every frame); default reports/show/<sample>.png."),
    frames: int = typer.Option(6, min=1, help="Frames in a .png strip, evenly spaced."),
) -> None:
    """Draw one sample's trunk, hand boxes and hand crops, to check that the crops are right."""
    setup_logging()
    with user_errors():
        written = render_sample(dataset, sample, out or default_out(sample), frames)
    typer.echo(f"show: {sample} -> {written}")


if __name__ == "__main__":
    standalone(show)()
