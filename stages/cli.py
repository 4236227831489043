"""`slrpipe`: every DVC stage as a subcommand, to run a stage by hand outside DVC."""

from __future__ import annotations

import typer

from stages import evaluate, extract, finetune, predict, preprocess, pretrain, report, show

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="slrpipe: self-supervised sign language recognition from 2D pose. Each stage reads params.yaml.",
)
app.command("extract")(extract.extract)
app.command("extract-merge")(extract.extract_merge)
app.command("preprocess")(preprocess.preprocess)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("evaluate")(evaluate.evaluate)
app.command("report")(report.report)
app.command("predict")(predict.predict)
app.command("show")(show.show)


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
