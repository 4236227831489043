"""`slrpipe show SAMPLE`: draw one preprocessed sample (trunk, hand boxes, both hand crops) to check the crops."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.show import render_sample
from slrpipe.h5io import RaggedFile
from stages.common import setup_logging, standalone, user_errors

DATASETS = "data/preprocess/*/dataset.h5"
OUT_DIR = Path("reports/show")


def default_out(sample: str) -> Path:
    """reports/show/<sample id as one file name>.png ('MP_Data/bad/0' -> 'MP_Data_bad_0.png')."""
    return OUT_DIR / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', sample).strip('_.') or 'sample'}.png"


def holding(sample: str) -> Path:
    """The dataset file (of every dataset's preprocess stage) that holds `sample`."""
    files = sorted(Path().glob(DATASETS))
    for path in files:
        with RaggedFile(path) as data:
            if sample in data.column("sample_id"):
                return path
    raise SlrpipeError(f"no sample {sample!r} in {', '.join(p.as_posix() for p in files) or DATASETS + ' (none yet: dvc repro)'}")


def show(
    sample: str = typer.Argument(..., help="The sample id, as in the dataset (e.g. MP_Data/bad/0)."),
    dataset: Path | None = typer.Option(None, help=f"A preprocess stage's dataset file [default: the one of {DATASETS} holding the sample]."),
    out: Path | None = typer.Option(None, help="A .png (a strip of frames) or .gif (every frame); default reports/show/<sample>.png."),
    frames: int = typer.Option(6, min=1, help="Frames in a .png strip, evenly spaced."),
) -> None:
    """Draw one sample's trunk, hand boxes and hand crops, to check that the crops are right."""
    setup_logging()
    with user_errors():
        dataset = dataset or holding(sample)
        written = render_sample(dataset, sample, out or default_out(sample), frames)
    typer.echo(f"show: {sample} -> {written}")


if __name__ == "__main__":
    standalone(show)()
