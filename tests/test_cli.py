"""The `sirst5k` entry point: every command is reachable, and a run imports only its own stage.

`sirst5k --help` imports no stage module (each command's help is read from its source), and
`sirst5k COMMAND ...` imports that command's module alone; both print what the full app prints.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sirst5k.stages.cli import COMMANDS, build_app, command_help, main

HEAVY = ("torch", "numpy", "h5py", "dask", "distributed", "scipy", "PIL", "pydantic")


def test_the_full_app_lists_every_command(capsys) -> None:
    names = {c.name for c in build_app().registered_commands}
    assert names == {name for name, _ in COMMANDS}


def test_a_command_runs_through_main(capsys) -> None:
    try:
        main(["verify", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "Usage: sirst5k verify" in capsys.readouterr().out


def _imports_after(argv: list[str]) -> tuple[list[str], list[str]]:
    """(sirst5k.stages modules, heavy libraries) imported by `main(argv)` in a fresh interpreter."""
    code = (f"import sys\nfrom sirst5k.stages.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in sys.modules if m.startswith('sirst5k.stages.')))\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    stages, heavy = out.strip().splitlines()[-2:]
    return eval(stages), eval(heavy)  # noqa: S307 - our own printout


def test_top_level_help_imports_no_stage_module() -> None:
    for argv in (["--help"], [], ["--help", "transfer"]) :
        stages, heavy = _imports_after(argv)
        expected = ["sirst5k.stages.transfer"] if "transfer" in argv else []
        assert [m for m in stages if m not in ("sirst5k.stages.cli", "sirst5k.stages.common")] == expected, argv
        assert heavy == [], f"sirst5k {' '.join(argv)} imported {heavy}"


@pytest.mark.parametrize("name,module", COMMANDS)
def test_command_help_imports_only_its_stage(name: str, module: str) -> None:
    stages, heavy = _imports_after([name, "--help"])
    assert [m for m in stages if m not in ("sirst5k.stages.cli", "sirst5k.stages.common")] == [f"sirst5k.stages.{module}"]
    # a stage module imports only typer, stdlib and the params at its top; pydantic (typer's
    # validators) is built only when an option's value is processed, which --help skips
    assert heavy == [], f"sirst5k {name} --help imported {heavy}"


def test_cpu_stages_start_without_torch() -> None:
    # torch's import is most of a stage's start-up; ingest, publish, verify, report and export (and their
    # workers, which import the same modules) never need it
    code = ("import sys\nfrom sirst5k.stages.cli import main\nimport sirst5k.report.build, sirst5k.export\n"
            "for cmd in ('ingest', 'publish', 'verify', 'report', 'export'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_help_read_from_the_source_is_the_docstring() -> None:
    import importlib
    import inspect

    for _, module in COMMANDS:
        assert command_help(module) == inspect.getdoc(importlib.import_module(f"sirst5k.stages.{module}").command)


def _via_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(argv)
        except SystemExit as done:
            code = done.code
    return code, out.getvalue()


@pytest.mark.parametrize("argv", [["--help"], [], ["bogus"], ["--help", "transfer"], ["--debug", "verify", "--help"],
                                  ["transfer"], ["transfer", "somewhere", "--bogus"],
                                  *[[name, "--help"] for name, _ in COMMANDS]], ids=" ".join)
def test_main_prints_what_the_full_app_prints(argv: list[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    want = CliRunner().invoke(build_app(), argv, prog_name="sirst5k")
    # the test runner formats help at 80 columns whatever the terminal says; main at the same width
    from typer._click import formatting

    monkeypatch.setattr(formatting, "FORCED_WIDTH", 80)
    code, text = _via_main(argv)
    assert (code, text) == (want.exit_code, want.output)


def test_global_options_come_before_the_command(capsys) -> None:
    # `sirst5k --debug verify ...`: the command is the first word that is not an option
    try:
        main(["--debug", "verify", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "Usage: sirst5k verify" in capsys.readouterr().out
    names = {c.name for c in build_app(["verify"]).registered_commands}
    assert names == {"verify"}
