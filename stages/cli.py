"""`sirst5k` command line: one subcommand per DVC stage, plus verify and export."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from sirst5k.stages.common import DEBUG_ENV, DEBUG_KEY

# (command name, module in stages/); each module exposes `command`.
COMMANDS = [
    ("synth", "synth"),
    ("ingest", "ingest"),
    ("noise-bank", "noise_bank"),
    ("transfer", "transfer"),
    ("negatives", "negatives"),
    ("publish", "publish"),
    ("report", "report"),
    ("verify", "verify"),
    ("export", "export"),
    ("evaluate", "evaluate"),
    ("modes", "modes"),
]


def build_app(names: list[str] | None = None) -> typer.Typer:
    """The command line with the named subcommands (all by default).

    Each stage module imports what its work needs (torch, skimage, dask); importing only the
    one a run asks for saves a second or two of every stage's start-up.
    """
    cli = typer.Typer(
        name="sirst5k",
        help="Build SIRST-5K-style infrared small-target datasets as versioned HDF5 shards.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @cli.callback()
    def _group(
        ctx: typer.Context,
        debug: Annotated[bool, typer.Option("--debug", envvar=DEBUG_ENV, help="Show the traceback of an error "
                                            "(also SIRST5K_DEBUG=1).")] = False,
    ) -> None:
        """Build SIRST-5K-style infrared small-target datasets as versioned HDF5 shards."""
        ctx.meta[DEBUG_KEY] = debug

    for name, module in COMMANDS:
        if names is None or name in names:
            cli.command(name)(importlib.import_module(f"sirst5k.stages.{module}").command)
    return cli


def __getattr__(name: str):
    # `from stages.cli import app` (tests, embedding) gets every command
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    # the command is the first word that is not a global option (`sirst5k --debug ingest ...`)
    first = next((a for a in args if not a.startswith("-")), None)
    wanted = [first] if first in {n for n, _ in COMMANDS} else []
    build_app(wanted or None)(args=args, prog_name="sirst5k")


if __name__ == "__main__":
    main()
