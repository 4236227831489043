"""Stage `finetune`: train the recognizer from the pretrained encoders (data/models/finetune/)."""

from __future__ import annotations

from pathlib import Path

import typer

from slrpipe.config import load_params
from slrpipe.finetune.train import run_finetune
from stages.common import (DatasetFileOption, ParamsOption, ProjectPathOption, TargetOption, in_project, setup_logging,
                           standalone, target_dataset, target_name, user_errors)

PRETRAINED = Path("data/models/pretrain/checkpoint.pt")
OUT_DIR = Path("data/models/finetune")  # + /<target>
LIVE_DIR = Path("data/dvclive/finetune")  # + /<target>


def finetune(
    params: Path = ParamsOption,
    target: str | None = TargetOption,
    dataset: Path | None = DatasetFileOption,
    pretrained: Path | None = ProjectPathOption(PRETRAINED, "The pretrain stage's checkpoint (unused by protocol scratch)."),
    out_dir: Path | None = ProjectPathOption(OUT_DIR / "<target>", "Where best.pt (the model) and last.pt (for resuming) go."),
    live_dir: Path | None = ProjectPathOption(LIVE_DIR / "<target>", "dvclive metrics and plots."),
    resume: bool = typer.Option(True, help="Continue from last.pt when it was made with the same settings, data and code."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune, linear-probe, semi-supervise or train from scratch (finetune.protocol).

    Several GPUs or nodes: torchrun --nproc-per-node=N -m stages.finetune
    """
    pretrained = in_project(params, pretrained, PRETRAINED)
    setup_logging(verbose)
    with user_errors():
        settings = load_params(params)
        name = target_name(settings.finetune.targets, target)
        dataset = target_dataset(params, dataset, name)
        out_dir = in_project(params, out_dir, OUT_DIR / name)
        live_dir = in_project(params, live_dir, LIVE_DIR / name)
        result = run_finetune(settings, dataset, pretrained, out_dir, live_dir, resume, name)
    selected = result.selected
    how = ("" if selected is None else f", best.pt = epoch {selected['epoch']} "
           + (f"(best {selected['metric']} {selected['value']:.4f})" if selected["metric"] else "(the last)"))
    typer.echo(f"finetune {name} ({settings.finetune.protocol}): {result.epochs_run} epochs run{how} -> {out_dir / 'best.pt'}")


if __name__ == "__main__":
    standalone(finetune)()
