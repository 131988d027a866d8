"""Start-up of the command line: `sirst5k --help` and `sirst5k COMMAND --help`, best of N.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5]

Each call is the `sirst5k` console script in a fresh process (what a user, and `dvc repro`, pay
before any work). Wall and CPU seconds (user + system, which other users of a shared machine
disturb less), and what the call imported: stage modules, and any of torch, numpy, h5py, dask,
scipy, PIL and pydantic; "before" columns run the code of --before-rev (default HEAD) the same
way. Goal: under 0.3 s each. For reference, the bare interpreter (`python -c pass`,
site-packages and this editable install's import hook included) and `import typer`.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import _common as C

HEAVY = ("torch", "numpy", "h5py", "dask", "distributed", "scipy", "PIL", "pydantic")
PROBE = ("import sys, runpy\nsys.argv = ['sirst5k', *{argv!r}]\ntry:\n    runpy.run_module('sirst5k', run_name='__main__')\n"
         "except SystemExit:\n    pass\nprint('\\n#IMPORTED', sorted(m for m in sys.modules if m.startswith('sirst5k.stages.') "
         "and m not in ('sirst5k.stages.cli', 'sirst5k.stages.common')), sorted(m for m in {heavy!r} if m in sys.modules))")


def timed(cmd: list[str], repeat: int, extra: dict | None = None) -> tuple[float, float]:
    best_wall = best_cpu = float("inf")
    env = {**os.environ, "COLUMNS": "100", **C.bytecode_env(), **(extra or {})}
    env = {k: v for k, v in env.items() if v is not None}
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_wall = min(best_wall, wall)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best_wall, best_cpu


def imported(argv: list[str], extra: dict | None = None) -> str:
    env = {**os.environ, **{k: v for k, v in (extra or {}).items() if v is not None}}
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                         text=True, env=env).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("#IMPORTED")), "#IMPORTED ? ?")
    return line.removeprefix("#IMPORTED ").replace("sirst5k.stages.", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before-rev", default="HEAD", help="git revision whose code makes the 'before' columns")
    ap.add_argument("--no-before", action="store_true")
    args = ap.parse_args()
    from sirst5k.stages.cli import COMMANDS

    script = C.BIN / "sirst5k"
    before = None if args.no_before else C.code_env(args.before_rev)
    C.header(f"command-line start-up, best of {args.repeat}" + ("" if args.no_before else
                                                                f"; before = the code of {args.before_rev}"))
    rows = []
    for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("python -c 'import typer'", [sys.executable, "-c", "import typer"])):
        rows.append([label, *timed(cmd, args.repeat), "", *(["", "", ""] if before else []), C.load()])
    for argv in [["--help"]] + [[name, "--help"] for name, _ in COMMANDS]:
        wall, cpu = timed([str(script), *argv], args.repeat)
        row = [f"sirst5k {' '.join(argv)}", wall, cpu, imported(argv)]
        if before:
            row += [*timed([str(script), *argv], args.repeat, before), imported(argv, before)]
        rows.append(row + [C.load()])
    C.table(["call", "wall s", "CPU s", "imported: stage modules, heavy libraries"]
            + (["before: wall s", "before: CPU s", "before: imported"] if before else []) + ["load"], rows)
    worst = max(r[1] for r in rows[2:])
    print(f"   slowest sirst5k call: {worst:.2f} s wall (goal: under 0.3 s)"
          + (f"; before: {max(r[4] for r in rows[2:]):.2f} s" if before else ""))


if __name__ == "__main__":
    main()
