"""Options every stage shares, and the edge where errors become one line for the user."""

from __future__ import annotations

import functools
from typing import Annotated, Callable, Optional

import typer

from sirst5k.errors import InputError, OutputError

Workers = Annotated[
    Optional[int], typer.Option("--workers", min=1, help="Local worker processes (default: min(4, cores)).")
]
Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", help="Existing dask scheduler, e.g. tcp://HOST:8786."),
]
Device = Annotated[str, typer.Option("--device", help="Where batch math runs: auto, cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Global seed; every draw is keyed by (seed, stage, sample).")]

def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn input/output problems into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, OutputError) as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def check_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device {device}: use auto, cpu or cuda")
    return device


def computed_on(results: list[dict]) -> str:
    """`[computed on cuda]`-style note from task results (reused shards computed nothing)."""
    devices = sorted({r["device"] for r in results if r.get("device")})
    return f" [computed on {', '.join(devices)}]" if devices else " [all shards reused]" if results else ""
