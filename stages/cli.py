"""`slrpipe`: every DVC stage as a subcommand, to run a stage by hand outside DVC."""

from __future__ import annotations

from pathlib import Path

import typer

from stages import baseline, compare, corpus, evaluate, extract, finetune, inputs, predict, preprocess, pretrain, report, show
from stages.common import user_errors

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="slrpipe: self-supervised sign language recognition from 2D pose. Each stage reads params.yaml.",
)
app.command("inputs")(inputs.inputs)
app.command("extract")(extract.extract)
app.command("extract-merge")(extract.extract_merge)
app.command("preprocess")(preprocess.preprocess)
app.command("corpus")(corpus.corpus)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("evaluate")(evaluate.evaluate)
app.command("baseline")(baseline.baseline)
app.command("report")(report.report)
app.command("compare")(compare.compare)
app.command("predict")(predict.predict)
app.command("show")(show.show)


@app.command("preset")
def preset(
    name: str = typer.Argument(None, help="Preset to apply; leave out to list them."),
    root: list[str] = typer.Option([], help="A dataset folder (or manifest CSV) for a paper preset: PATH when it names "
                                            "one dataset, NAME=PATH for each of several (paper: msasl, wlasl, nmfs_csl, slr500)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameters file to update."),
) -> None:
    """Write a paper recipe (paper: the four-dataset corpus; wlasl100, msasl1000, nmfs_csl, ...: one
    dataset), the demo settings, or every paper/authors'-code switch at once (authors, paper_forms)
    into params.yaml."""
    from slrpipe.presets import apply_preset, dataset_entries, presets

    if name is None:
        for preset_name, values in presets().items():
            if not dataset_entries(values):  # a form preset: switches only, on top of any recipe
                typer.echo(f"{preset_name:<10} {len(values)} switches ({preset_name.replace('_', ' ')}), any dataset")
                continue
            typer.echo(f"{preset_name:<10} datasets {', '.join(dataset_entries(values))}; "
                       f"corpus {', '.join(values.get('pretrain.corpus', []))}, targets {', '.join(values.get('finetune.targets', []))}; "
                       f"model {values.get('model.size')}, {values.get('pretrain.epochs')} pretraining epochs")
        return
    with user_errors():
        changed = apply_preset(params, name, root)
    typer.echo(f"preset {name}: {len(changed)} values written to {params}; `dvc repro` reruns what they affect")
    if name != "demo" and dataset_entries(presets()[name]):  # a recipe with datasets, not a form preset
        typer.echo("set extract.pose_checkpoint to your MMPose whole-body weights before extracting videos")


@app.command("install-extras")
def install_extras(
    extras: list[str] = typer.Argument(..., help="mmpose and/or mediapipe"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the pip commands only."),
) -> None:
    """Install the MMPose and/or MediaPipe pose backends without their conflicting requirements."""
    from slrpipe.install_extras import main as install

    raise typer.Exit(install(list(extras) + (["--dry-run"] if dry_run else [])))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
