"""One import name: the wheel installs `sirst5k` alone, and a user's own `pipeline/` does not shadow it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import sirst5k.__main__ as entry

ROOT = Path(__file__).resolve().parents[1]


def test_the_loader_imports_beside_a_users_own_pipeline_and_stages_packages(tmp_path: Path) -> None:
    # ML repositories often have their own `pipeline/`; ours must not be found under that name
    for name in ("pipeline", "stages"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    code = ("import sirst5k.loader, sirst5k.stages.cli\n"
            "from sirst5k.loader import ShardDataset\n"
            "import sys\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'stages')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_line_says_in_one_line_what_a_loader_only_install_lacks(monkeypatch, capsys) -> None:
    real = entry.importlib.util.find_spec
    monkeypatch.setattr(entry.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("typer", "dask", "distributed") else real(name, *a))
    with pytest.raises(SystemExit) as done:
        entry.main(["--help"])
    assert done.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("sirst5k: the command line needs dask[distributed], typer")
    assert "pip install 'dask[distributed]' typer" in line


def test_a_full_install_runs_the_command_line(capsys) -> None:
    assert entry.missing_packages() == []
    with pytest.raises(SystemExit) as done:
        entry.main(["verify", "--help"])
    assert done.value.code == 0
    assert "Usage: sirst5k verify" in capsys.readouterr().out


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    # from a copy: setuptools builds in the source tree (build/), which must stay clean
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "pipeline", "stages"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("sirst5k-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"sirst5k"}
    for module in ("sirst5k/loader.py", "sirst5k/params.py", "sirst5k/method/negatives.py",
                   "sirst5k/formats/bank.py", "sirst5k/runner/tasks.py", "sirst5k/stages/cli.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sirst5k = sirst5k.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


STAGE_MODULES = ("synth", "ingest", "noise_bank", "transfer", "negatives", "publish", "report", "verify", "export",
                 "modes", "evaluate")


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_a_stage_module_imports_no_heavy_library(module: str) -> None:
    # the command line lists and parses options with these modules alone: torch, h5py and dask
    # load (seconds) only inside the functions that do the work
    code = (f"import sys, sirst5k.stages.{module}\n"
            "print(sorted(m for m in ('torch', 'h5py', 'dask', 'distributed', 'skimage', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_command_reuses_the_memory_of_a_freed_array_without_faulting_it_in_again() -> None:
    """`sirst5k` (the entry point) keeps big arrays on the heap: a stage allocates the same few sizes
    shard after shard, and each fresh mmap costs page faults and zeroing (~0.35 s of the 4-command
    SIRST recipe's CPU)."""
    code = ("import resource, sys\n"
            "import sirst5k.__main__ as entry\n"
            "print(entry.reuse_freed_memory() if sys.argv[1] == '1' else 'off')\n"
            "import numpy as np\n"
            "faults = []\n"
            "for _ in range(3):\n"
            "    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    a = np.ones(48 << 20, np.uint8)\n"
            "    del a\n"
            "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
            "print(*faults)\n")
    runs = {}
    for on in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, on], capture_output=True, text=True, check=True)
        set_, faults = out.stdout.splitlines()
        runs[on] = (set_, [int(f) for f in faults.split()])
    if runs["1"][0] != "True":
        pytest.skip("this libc has no mallopt (not glibc)")
    off, on = runs["0"][1], runs["1"][1]
    assert min(off[1:]) > 10, f"without it every 48 MiB array faults its pages in again: {off}"
    assert max(on[1:]) * 10 < min(off[1:]), f"the freed array's memory was not reused: {on} vs {off}"
