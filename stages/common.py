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
