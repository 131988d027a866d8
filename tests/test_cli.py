"""The `sirst5k` entry point: every command is reachable, and a run imports only its own stage."""

from __future__ import annotations

import subprocess
import sys

from sirst5k.stages.cli import COMMANDS, build_app, main


def test_the_full_app_lists_every_command(capsys) -> None:
    names = {c.name for c in build_app().registered_commands}
    assert names == {name for name, _ in COMMANDS}


def test_a_command_runs_through_main(capsys) -> None:
    try:
        main(["verify", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "Usage: sirst5k verify" in capsys.readouterr().out


def test_cpu_stages_start_without_torch() -> None:
    # torch's import is most of a stage's start-up; ingest, publish, verify, report and export (and their
    # workers, which import the same modules) never need it
    code = ("import sys\nfrom sirst5k.stages.cli import main\nimport sirst5k.report.build, sirst5k.export\n"
            "for cmd in ('ingest', 'publish', 'verify', 'report', 'export'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_global_options_come_before_the_command(capsys) -> None:
    # `sirst5k --debug verify ...`: the command is the first word that is not an option
    try:
        main(["--debug", "verify", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "Usage: sirst5k verify" in capsys.readouterr().out
    names = {c.name for c in build_app(["verify"]).registered_commands}
    assert names == {"verify"}
