"""What every stage command shares: logging, params loading, one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from slrpipe.errors import SlrpipeError

ParamsOption = typer.Option(Path("params.yaml"), "--params", help="Parameters file.", dir_okay=False)


def ProjectPathOption(default: Path, help: str, *names: str):  # noqa: N802 - builds a typer default, like typer.Option
    """An input or output path option whose default lies under the project (the params file's
    folder), so `cd elsewhere && slrpipe STAGE --params path/params.yaml` reads and writes the
    project's files. A path given on the command line is taken as given (from the current folder).
    `names`: the option's flags, when not the parameter's name."""
    return typer.Option(None, *names, help=f"{help} [default: {default.as_posix()} beside the params file]", show_default=False)


PREPROCESS_DIR = Path("data/preprocess")  # the preprocess stages write <dataset>/dataset.h5 here

# A target's dataset file, for the stages that run per fine-tuning target (see target_dataset).
DatasetFileOption = ProjectPathOption(PREPROCESS_DIR / "<target>" / "dataset.h5", "The preprocess stage's dataset file.",
                                      "--dataset-file")


def in_project(params: Path, given: Path | None, default: Path) -> Path:
    """`given`, or else `default` under the params file's folder (unchanged when that is the current one)."""
    return given if given is not None else params.parent / default


def only_file(pattern: str, what: str, hint: str) -> Path:
    """The one file matching `pattern` (a glob from the current folder), for a command's default input."""
    from slrpipe.errors import SlrpipeError

    found = sorted(Path().glob(pattern))
    if len(found) != 1:
        which = f"{len(found)} ({', '.join(p.as_posix() for p in found)})" if found else "none"
        raise SlrpipeError(f"{what}: {pattern} matches {which}: {hint}")
    return found[0]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Third-party libraries (mmengine, absl) are chatty at INFO.
    for name in ("mmengine", "absl", "matplotlib", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a SlrpipeError into one line on stderr and exit status 1, not a traceback."""
    try:
        yield
    except SlrpipeError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def standalone(command: Callable) -> Callable[[], None]:
    """Entry point for `python -m stages.<name>` running one command."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    return app


DatasetOption = typer.Option(None, "--dataset", help="Which of params.yaml's datasets (a name under datasets:); "
                                                     "may be left out when there is only one.")
TargetOption = typer.Option(None, "--dataset", help="Which of finetune.targets; may be left out when there is only one.")


def target_name(targets: tuple[str, ...], given: str | None) -> str:
    """`given`, which must be one of finetune.targets, or else the only target."""
    from slrpipe.errors import ParamsError

    if given is None:
        if len(targets) != 1:
            raise ParamsError(f"finetune.targets names {len(targets)} datasets ({', '.join(targets)}): say which one (--dataset NAME)")
        return targets[0]
    if given not in targets:
        raise ParamsError(f"{given!r} is not one of finetune.targets ({', '.join(targets)})")
    return given


def target_dataset(params: Path, given: Path | None, target: str) -> Path:
    """The --dataset-file given, else the target's dataset.h5 under the project's preprocess folder."""
    return in_project(params, given, PREPROCESS_DIR / target / "dataset.h5")
