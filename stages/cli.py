"""`sirst5k` command line: one subcommand per DVC stage, plus verify and export.

Start-up is kept to what the typed command needs:
  - `sirst5k COMMAND ...` imports that command's module alone and runs it as a one-command app
    (same usage lines, help and errors as under the group);
  - `sirst5k --help` (and any call that names no command first) imports no stage module: each
    command's one-line help is read from its module's source (the docstring of its `command`
    function, found with `ast`), so a stage whose module imports torch or dask at its top costs
    nothing here.
`from sirst5k.stages.cli import app` (tests, embedding) is the full app, every module imported.
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path
from typing import Annotated, Callable

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
    ("recipe", "recipe"),
    ("report", "report"),
    ("verify", "verify"),
    ("export", "export"),
    ("evaluate", "evaluate"),
    ("modes", "modes"),
]
NAMES = {name: module for name, module in COMMANDS}
HELP = "Build SIRST-5K-style infrared small-target datasets as versioned HDF5 shards."
PROG = "sirst5k"


def _typer(**extra) -> typer.Typer:
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, **extra)


def build_app(names: list[str] | None = None, *, lazy: bool = False) -> typer.Typer:
    """The command line with the named subcommands (all by default), their modules imported.

    lazy: every command is listed, but only the named ones are imported; the others are
    stand-ins that carry their name and help (read from their module's source), enough for
    `sirst5k --help`.
    """
    cli = _typer(name=PROG, help=HELP, no_args_is_help=True)

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
            cli.command(name)(_load(module))
        elif lazy:
            cli.command(name, help=command_help(module))(_stand_in(name))
    return cli


def _load(module: str) -> Callable:
    return importlib.import_module(f"sirst5k.stages.{module}").command


def _stand_in(name: str) -> Callable:
    def stand_in() -> None:
        # only its name and help are ever shown: `main` imports the command a run names
        raise RuntimeError(f"the stand-in of `{PROG} {name}` ran; build_app([{name!r}]) imports the command")

    return stand_in


@functools.lru_cache(maxsize=None)
def command_help(module: str) -> str | None:
    """The docstring of `command` in stages/<module>.py, read from the source without importing it
    (the module imported instead when its source cannot be read)."""
    path = Path(__file__).with_name(f"{module}.py")
    try:
        source = path.read_text(encoding="utf-8")
        # parse from the function on (the part above it can be long); all of it if that fails
        at = source.find("\ndef command(")
        try:
            tree = ast.parse(source[at + 1:] if at >= 0 else source, str(path))
        except SyntaxError:
            tree = ast.parse(source, str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        tree = None
    for node in tree.body if tree else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "command":
            return ast.get_docstring(node)
    import inspect

    return inspect.getdoc(_load(module))


def single_command_app(name: str) -> typer.Typer:
    """The one command `name` as an app of its own (`sirst5k NAME ...`): only its module is imported.

    Run under the group, a subcommand's `--help` would also make typer build a pydantic validator
    for the group's own `--help` (0.1-0.2 s); alone it needs none, and prints the same text.
    """
    cli = _typer()
    cli.command(name)(_load(NAMES[name]))
    return cli


def __getattr__(name: str):
    # `from stages.cli import app` (tests, embedding) gets every command
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in NAMES:
        # `sirst5k COMMAND ...`: the command alone
        single_command_app(args[0])(args=args[1:], prog_name=f"{PROG} {args[0]}")
        return
    # global options first (`sirst5k --debug ingest ...`), `sirst5k --help`, or no command: the
    # group, with the named command (the first word that is not an option) imported, if any
    first = next((a for a in args if not a.startswith("-")), None)
    build_app([first] if first in NAMES else [], lazy=True)(args=args, prog_name=PROG)


if __name__ == "__main__":
    main()
