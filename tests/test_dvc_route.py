"""The DVC route of docs/toolboxes.md, end to end and offline (issue 17).

A producer repo (this project's pipeline files, `dvc repro publish` on a tiny synthetic set, a
local DVC remote in the committed `.dvc/config`, `dvc push`) and a consumer repo that takes the
published folder with `dvc get` and with `dvc import` by the producer's local path, exactly as
the commands in docs/toolboxes.md say; both copies verify. The consumer's commands are read from
the document, so the document cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "toolboxes.md"
# what the pipeline needs to run in another checkout (dvc.yaml's deps and commands)
PRODUCER_FILES = ("pipeline", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
                  ".gitignore")
TINY = {"synth": {"images": 12, "sequences": 2, "frames": 4, "size": 64}, "ingest": {"size": 64, "shard-size": 8},
        "publish": {"shard-size": 16}, "workers": 1, "device": "cpu"}


def run(cwd: Path, *args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"{' '.join(args)} in {cwd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def doc_block(title: str) -> list[str]:
    """The command lines of the first ```bash block after the heading `title` in docs/toolboxes.md."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(title)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"no bash block after {title!r}"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _tiny_params(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    for key, value in TINY.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home),
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site")}


@pytest.fixture(scope="module")
def producer(tmp_path_factory, env) -> Path:
    """A git repo with this project's pipeline, the tiny dataset published by `dvc repro`, its
    remote committed in .dvc/config, and the data pushed."""
    base = tmp_path_factory.mktemp("route")
    repo, remote = base / "producer", base / "remote"
    repo.mkdir()
    for name in PRODUCER_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, repo / name)
    _tiny_params(repo / "params.yaml")
    run(repo, "git", "init", "-q", env=env)
    run(repo, "git", "add", "-A", env=env)
    run(repo, "git", "commit", "-qm", "the project", env=env)  # as this repository is: the code committed
    run(repo, "dvc", "repro", "-q", "publish", env=env)
    # the producer's side of the route, as docs/toolboxes.md gives it (the remote: a local folder)
    for line in doc_block("### In this repository"):
        line = line.replace("/srv/dvc-store", str(remote))
        if line.startswith("make repro"):
            continue  # done above on the tiny params
        run(repo, "bash", "-c", line, env=env)
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"
    status = run(repo, "git", "status", "--porcelain", env=env).stdout
    assert status.strip() == "", f"uncommitted files left in the producer: {status}"
    return repo


def url(repo: Path) -> str:
    """The producer as another machine sees it: a git URL (`file://`), so that only what is
    committed counts. (Given a plain local path DVC also reads the folder's uncommitted
    .dvc/config.local and falls back to its cache, which no other machine has.)"""
    return f"file://{repo}"


def _consumer(base: Path, env: dict[str, str]) -> Path:
    repo = base / "consumer"
    repo.mkdir()
    run(repo, "git", "init", "-q", env=env)
    run(repo, "dvc", "init", "-q", env=env)
    run(repo, "dvc", "config", "core.check_update", "false", env=env)
    return repo


def test_dvc_get_and_import_from_another_repo(producer, tmp_path, env):
    repo = _consumer(tmp_path, env)
    lines = doc_block("### In the other repository")
    assert any(line.startswith("dvc get ") for line in lines) and any(line.startswith("dvc import ") for line in lines)
    for line in lines:
        run(repo, "bash", "-c", line.replace("<url-of-this-repo>", url(producer)), env=env)
    # both copies are the published dataset, byte for byte, and verify
    published = producer / "output" / "sirst5k"
    for copy in (repo / "sirst5k", repo / "data" / "sirst5k"):
        assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in published.iterdir())
        for p in published.iterdir():
            assert (copy / p.name).read_bytes() == p.read_bytes(), p.name
        assert "OK" in run(repo, str(BIN / "sirst5k"), "verify", str(copy), env=env).stdout
    # the import is tracked: a .dvc file that records where it came from
    record = yaml.safe_load((repo / "data" / "sirst5k.dvc").read_text())
    assert record["deps"][0]["path"] == "output/sirst5k" and record["deps"][0]["repo"]["url"] == url(producer)
    assert "data/sirst5k" not in run(repo, "git", "status", "--porcelain", "--untracked-files=all", env=env).stdout \
        .replace("data/sirst5k.dvc", "").replace("data/.gitignore", "")


def test_dvc_get_fails_without_the_remote_in_the_committed_config(producer, tmp_path, env):
    """Why the document commits .dvc/config: with the remote only in .dvc/config.local (`dvc remote
    add --local`) another repo cannot find the data."""
    clone = tmp_path / "local-remote"
    run(tmp_path, "git", "clone", "-q", str(producer), str(clone), env=env)
    remote = run(clone, "dvc", "remote", "list", env=env).stdout.split()[1]
    run(clone, "dvc", "remote", "remove", "store", env=env)
    run(clone, "dvc", "remote", "add", "--local", "-d", "store", remote, env=env)
    run(clone, "git", "commit", "-qam", "remote only in config.local", env=env)
    repo = _consumer(tmp_path, env)
    done = run(repo, "dvc", "get", url(clone), "output/sirst5k", "-o", "sirst5k", env=env, ok=False)
    assert done.returncode != 0 and not (repo / "sirst5k").exists()
