"""params.yaml's `evaluate:` section and evaluate/dvc.yaml agree with `sirst5k evaluate`'s options."""

from __future__ import annotations

from pathlib import Path

import yaml

from sirst5k.evaluate import experiment

ROOT = Path(__file__).resolve().parents[1]


def _options() -> set[str]:
    import typer.main

    from sirst5k.stages.evaluate import command

    cmd = typer.main.get_command(_app(command))
    return {opt.lstrip("-") for p in cmd.params for opt in p.opts + p.secondary_opts}


def _app(fn):
    import typer

    app = typer.Typer()
    app.command()(fn)
    return app


def test_every_evaluate_param_is_an_option_and_every_arm_parses():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    options = _options()
    assert set(params) <= options, set(params) - options
    arms = [experiment.parse_arm(a) for a in params["arm"]]
    assert arms[0].name == experiment.BASELINE
    assert len({a.name for a in arms}) == len(arms)


def test_evaluate_dvc_stage_passes_the_section_and_lists_the_code():
    stages = yaml.safe_load((ROOT / "evaluate" / "dvc.yaml").read_text())["stages"]
    ev = stages["evaluate"]
    assert "${evaluate}" in ev["cmd"]
    assert {"../stages/evaluate.py", "../pipeline/evaluate", "../pipeline/method"} <= set(ev["deps"])
    arm_dirs = {d for a in yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]["arm"]
                for d in experiment.parse_arm(a).dirs}
    assert arm_dirs <= set(ev["deps"])  # a changed arm folder reruns the stage
