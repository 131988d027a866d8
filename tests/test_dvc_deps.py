"""dvc.yaml's deps cover every project file each stage's command imports.

A stage whose code changed must rerun: a module it imports but does not list (the seeded
generator, the task keys, the producer version) would leave `dvc repro` "up to date" over stale
data. The imports are followed statically (every `import` and `from ... import`, also those
inside functions, which is where the stages import their heavy modules), from the entry point
`sirst5k.stages.cli` and the stage's own module.
"""

from __future__ import annotations

import ast
import importlib.util
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "sirst5k"


def module_file(name: str) -> Path | None:
    """The project file of module `name`, or None when it is not one of ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve()
    return path if ROOT in path.parents else None


def _imports(path: Path, module: str) -> set[str]:
    """Modules that `path` (module `module`) may import, including `from pkg import submodule`."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # importing a.b.c imports a and a.b too
    return {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 2)}


def import_closure(*modules: str) -> set[Path]:
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name) - seen.keys())
    return set(seen.values())


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _stage_module(cmd: str) -> str:
    """`sirst5k noise-bank ...` -> sirst5k.stages.noise_bank (through the CLI's own table)."""
    from sirst5k.stages.cli import COMMANDS

    words = shlex.split(cmd)
    assert words[0] == "sirst5k", f"stage command does not run the sirst5k CLI: {cmd}"
    table = dict(COMMANDS)
    return f"{PACKAGE}.stages.{table[words[1]]}"


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    for dep in deps:
        dep_path = Path(dep.rstrip("/"))
        if rel == dep_path or dep_path in rel.parents:
            return True
    return False


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_every_imported_project_file_is_a_dep(stage: str) -> None:
    spec = _stages()[stage]
    needed = import_closure(f"{PACKAGE}.stages.cli", _stage_module(" ".join(spec["cmd"].split())))
    deps = [str(d) for d in spec.get("deps", [])]
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} imports files it does not list as deps: {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    # the transfer stage imports the seeded generator only inside its task function
    files = {str(p.relative_to(ROOT)) for p in import_closure(f"{PACKAGE}.stages.transfer")}
    assert "pipeline/method/rng.py" in files
    assert "pipeline/__init__.py" in files
    assert "pipeline/runner/outputs.py" in files
