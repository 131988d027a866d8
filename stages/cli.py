"""`sirst5k` command line: one subcommand per DVC stage, plus verify and export."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="sirst5k",
    help="Build SIRST-5K-style infrared small-target datasets as versioned HDF5 shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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

for _name, _module in COMMANDS:
    try:
        _mod = importlib.import_module(f"stages.{_module}")
    except ModuleNotFoundError as _err:  # a stage module not written yet must not break the others
        if _err.name != f"stages.{_module}":
            raise
        continue
    app.command(_name)(_mod.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
