"""The ``segweak`` command: a thin layer that parses options and calls the stage functions.

Every subcommand imports its stage lazily (so ``segweak --help`` is fast) and turns
:class:`~segweak.errors.SegweakError` into one red line and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from segweak import __version__
from segweak.errors import SegweakError

app = typer.Typer(
    name="segweak",
    help="Weakly supervised semantic segmentation experiments on aerial imagery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(help="Cut labelled tiles into a prepared patch store.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segweak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Weakly supervised semantic segmentation experiments on aerial imagery."""


# ---- data commands (synth, download, prepare, split, info) ----------------------------------------

# ---- training commands (train, evaluate, predict) -------------------------------------------------

# ---- experiment commands (run, report, demo) ------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segweak`` console script; returns the process exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except SegweakError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except FileExistsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
