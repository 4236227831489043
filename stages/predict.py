"""`slrpipe predict INPUT...`: the top-k glosses of new videos or pose files, with a fine-tuned model."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import typer
from tqdm import tqdm

from slrpipe.evaluation.predict import Predictor, find_inputs, write_predictions
from stages.common import only_file, setup_logging, standalone, user_errors

MODELS = "data/models/finetune/*/best.pt"  # one per target


@contextmanager
def _destination(output: Path | None) -> Iterator[Callable[[str], None]]:
    """A function writing one line to `output`, or to the terminal without breaking the progress bar."""
    if output is None:
        yield lambda line: tqdm.write(line, file=sys.stdout)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="") as handle:
        yield lambda line: handle.write(line + "\n")


def predict(
    inputs: list[Path] = typer.Argument(..., help="Videos, folders of them, MediaPipe frame folders or (T, 258|1662) .npy files, "
                                                   "MMPose .json files."),
    model: Path | None = typer.Option(None, help=f"A model file of the finetune stage [default: the one {MODELS}]."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Glosses shown per input (at most the number of classes)."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per input and line."),
    csv_format: bool = typer.Option(False, "--csv", help="CSV: input, gloss_1, probability_1, ..., error."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the results to this file instead of the terminal."),
    backend: Literal["mediapipe", "mmpose"] = typer.Option("mediapipe", help="Pose estimator for videos."),
    pose_config: str | None = typer.Option(None, help="mmpose: a config file or a path inside MMPose's configs "
                                                      "(default: the extract stage's RTMPose-m)."),
    pose_checkpoint: Path | None = typer.Option(None, help="mmpose: the config's weights."),
    frame_size: tuple[int, int] | None = typer.Option(None, metavar="WIDTH HEIGHT",
                                                      help="Image size of pose-file inputs (default: the training data's)."),
    device: Literal["auto", "cpu", "cuda"] = typer.Option("auto", help="Where the model (and mmpose) run."),
    batch_size: int = typer.Option(32, min=1, help="Inputs per forward pass."),
    cache_dir: Path | None = typer.Option(None, help="Reuse and keep per-video keypoints here (e.g. data/cache/extract)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Recognize the sign in each input: top-k glosses with their probabilities. Exit status 1 if any input failed."""
    setup_logging(verbose)
    if json_lines and csv_format:
        raise typer.BadParameter("choose one of --json and --csv")
    fmt = "json" if json_lines else "csv" if csv_format else "table"
    with user_errors():
        model = model or only_file(MODELS, "no --model given", "pass one with --model")
        predictor = Predictor(model, backend, pose_config, pose_checkpoint, device, frame_size, cache_dir)
        items = find_inputs(inputs)
        with _destination(output) as emit:
            failed = write_predictions(predictor.predict(items, top_k, batch_size), fmt, predictor.top_k(top_k), emit)
    if failed:
        typer.secho(f"predict: {failed} of {len(items)} input(s) failed", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    standalone(predict)()
