"""Options every stage shares, and the edge where errors become one line for the user."""

from __future__ import annotations

import functools
import importlib
import os
import traceback
from typing import Annotated, Callable, Optional

import typer

from sirst5k.errors import InputError, OutputError
from sirst5k.params import ParamError

Workers = Annotated[
    Optional[int], typer.Option("--workers", min=1, help="Most local worker processes (default: min(4, cores)); small work runs in this process, 1 never starts a cluster (SIRST5K_CLUSTER=always|never overrides).")
]
Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", help="Existing dask scheduler, e.g. tcp://HOST:8786."),
]
Device = Annotated[str, typer.Option("--device", help="Where batch math runs: auto, cpu or cuda.")]
Seed = Annotated[int, typer.Option("--seed", help="Global seed; every draw is keyed by (seed, stage, sample).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out that is not this stage's earlier output (never an input or a folder holding one).")]

def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


DEBUG_ENV = "SIRST5K_DEBUG"
DEBUG_KEY = "sirst5k_debug"  # in the click context's shared meta, set by `sirst5k --debug`


def debugging() -> bool:
    """True under `sirst5k --debug` or SIRST5K_DEBUG=1: errors then show their traceback."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    ctx = _current_context()
    return bool(ctx is not None and ctx.meta.get(DEBUG_KEY))


def _current_context():
    """The running command's click context (typer vendors its own click; older typers use click's)."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            get = importlib.import_module(module).get_current_context
        except (ImportError, AttributeError):
            continue
        ctx = get(silent=True)
        if ctx is not None:
            return ctx
    return None


def _passthrough() -> tuple[type[BaseException], ...]:
    """typer's (and click's) own exceptions: usage errors and exits, which typer reports itself."""
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort, typer.exceptions.TyperException]
    try:
        import click

        kinds += [click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort]
    except ImportError:
        pass
    return tuple(kinds)


def user_errors(fn: Callable) -> Callable:
    """Turn every error into one line on stderr, no traceback: input/output problems exit 2, any
    other exception (a bug) exits 1 and says how to see the traceback. With `--debug` (or
    SIRST5K_DEBUG=1) the traceback is printed first."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, OutputError, ParamError) as err:
            if debugging():
                traceback.print_exc()
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)
        except Exception as err:  # a bug, or a library's failure nothing above foresaw
            if isinstance(err, _passthrough()):
                raise  # typer's own: usage errors, exits
            if debugging():
                traceback.print_exc()
                fail(f"{type(err).__name__}: {one_line(err)}", code=1)
            fail(f"{type(err).__name__}: {one_line(err)} (internal error; run with --debug or SIRST5K_DEBUG=1 "
                 "for the traceback)", code=1)

    return wrapper


def one_line(value: object) -> str:
    return " ".join(str(value).split()) or "no message"


def check_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device {device}: use auto, cpu or cuda")
    return device


def computed_on(results: list[dict]) -> str:
    """`[computed on cuda]`-style note from task results (reused shards computed nothing)."""
    devices = sorted({r["device"] for r in results if r.get("device")})
    return f" [computed on {', '.join(devices)}]" if devices else " [all shards reused]" if results else ""
