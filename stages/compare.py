"""`slrpipe compare`: two runs' test scores, the difference of their top-1 with a paired bootstrap interval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from slrpipe.evaluation.compare import compare_scores
from stages.common import user_errors

DATASET = Path("data/preprocess/dataset.h5")


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def compare(
    a: Path = typer.Argument(..., help="Scores CSV of run A (an evaluate stage's scores.csv).", dir_okay=False),
    b: Path = typer.Argument(..., help="Scores CSV of run B, on the same test samples.", dir_okay=False),
    dataset: Path = typer.Option(DATASET, help="A preprocess dataset.h5 holding the samples' signers (for the interval "
                                               "over signers); skipped when missing or without signer ids."),
    draws: int = typer.Option(2000, min=1, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
) -> None:
    """A's top-1 minus B's, with 95 % paired bootstrap intervals over the test samples (and over
    signers when known): e.g. a pretrained run against one trained from scratch."""
    with user_errors():
        result = compare_scores(a, b, dataset, draws, seed)
    if as_json:
        typer.echo(json.dumps({"samples": result.samples, "signers": result.signers, "a": result.top1_a, "b": result.top1_b,
                               "a_minus_b": {level: dict(zip(("difference", "ci_low", "ci_high"), values))
                                             for level, values in result.difference.items()},
                               "a_minus_b_over_signers": None if result.signer_difference is None else {
                                   level: dict(zip(("difference", "ci_low", "ci_high"), values))
                                   for level, values in result.signer_difference.items()}}))
        return
    typer.echo(f"{result.samples} test samples" + (f", {result.signers} signers" if result.signers else ""))
    for level, name in (("per_instance", "P-I"), ("per_class", "P-C")):
        difference, low, high = result.difference[level]
        line = (f"{name} top-1: A {100 * result.top1_a[level]:.2f}, B {100 * result.top1_b[level]:.2f}, A - B "
                f"{_points(difference)} points [{_points(low)}, {_points(high)}] over samples")
        if result.signer_difference is not None:
            _, low, high = result.signer_difference[level]
            line += f", [{_points(low)}, {_points(high)}] over signers"
        typer.echo(line)
    typer.echo(result.verdict("A", "B"))
