"""`make repro` after set-up: every stage of the default 1,327-image synthetic set, timed, and DVC's own share.

    .venv/bin/python benchmarks/repro_time.py [--before] [--keep]

The working tree (tracked and untracked files that git does not ignore) is copied into a fresh
folder under $SIRST5K_BENCH_DIR with an empty output/ and DVC cache, and `dvc repro dvc.yaml`
runs there as `make repro` runs it (the venv's bin first on PATH, DVC_NO_ANALYTICS=1,
OMP_NUM_THREADS=2). A `sirst5k` wrapper first on PATH logs each stage command's wall time, so
DVC's own share (hashing dependencies and outputs, saving them to its cache, dvc.lock) is the
total less the commands. A second `dvc repro` with nothing changed is DVC's check alone; a third,
`dvc repro --force --single-item` of every stage but synth, is a rebuild after a code change (every
stage after synth, which writes 1,327 PNGs at PIL's default compression: ~40 CPU-seconds).
Afterwards the outputs' hashes in the copy's dvc.lock are compared with the checkout's dvc.lock:
the same bytes, stage by stage. --before also runs it with the code of --before-rev (default
HEAD, the commit a change sits on: `_common.code_env`). Goal: under 20 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import yaml

WRAPPER = """#!/bin/sh
start=$(date +%s.%N)
"{real}" "$@"
rc=$?
echo "$1 $start $(date +%s.%N) $rc" >> "{log}"
exit $rc
"""


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=C.REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = C.REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def outs(lock: Path) -> dict[str, str]:
    doc = yaml.safe_load(lock.read_text())
    return {o["path"]: o.get("md5", "") for stage in doc.get("stages", {}).values() for o in stage.get("outs", [])}


def repro(env_extra: dict, keep: bool, cache_type: str | None = None) -> dict:
    root = C.bench_dir() / "repro-copy"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    copy_tree(root)
    for stale in (root / "output", root / ".dvc" / "cache", root / ".dvc" / "tmp", root / "dvc.lock"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    bindir = root / ".bench-bin"
    bindir.mkdir()
    log = root / "commands.log"
    (bindir / "sirst5k").write_text(WRAPPER.format(real=C.BIN / "sirst5k", log=log))
    (bindir / "sirst5k").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{C.BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **C.bytecode_env(),
           **env_extra}
    env = {k: v for k, v in env.items() if v is not None}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    dvc = str(C.BIN / "dvc")
    subprocess.run([dvc, "config", "core.check_update", "false", "--local"], cwd=root, env=env, check=True,
                   capture_output=True)
    if cache_type:
        subprocess.run([dvc, "config", "cache.type", cache_type, "--local"], cwd=root, env=env, check=True,
                       capture_output=True)

    def timed(*args: str) -> float:
        C.progress(f"dvc {' '.join(args[:3])}{' ...' if len(args) > 3 else ''}")
        t = time.perf_counter()
        proc = subprocess.run([dvc, *args], cwd=root, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return time.perf_counter() - t

    def commands_since(mark: int) -> list[tuple[str, float]]:
        lines = log.read_text().splitlines()[mark:] if log.exists() else []
        return [(ln.split()[0], float(ln.split()[2]) - float(ln.split()[1])) for ln in lines]

    total = timed("repro", "dvc.yaml")
    commands = commands_since(0)
    again = timed("repro", "dvc.yaml")
    # a rebuild after a code change: every stage after synth, forced (the source is there)
    after_synth = [name for name in yaml.safe_load((root / "dvc.yaml").read_text())["stages"] if name != "synth"]
    rebuild = timed("repro", "--force", "--single-item", *(f"dvc.yaml:{name}" for name in after_synth))
    rebuild_commands = commands_since(len(commands))
    mine, ref = outs(root / "dvc.lock"), outs(C.REPO / "dvc.lock")
    differ = sorted(p for p in ref if mine.get(p) != ref[p])
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {"total": total, "again": again, "commands": commands, "differ": differ, "n_outs": len(ref),
            "rebuild": rebuild, "rebuild_commands": rebuild_commands, "load": C.load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", action="store_true", help="also run with the code of --before-rev")
    ap.add_argument("--before-rev", default="HEAD", help="git revision whose code makes the 'before' figures")
    ap.add_argument("--keep", action="store_true", help="keep the copy under the bench dir")
    ap.add_argument("--cache-type", help="also run with this DVC cache.type (e.g. hardlink), to see DVC's share move")
    args = ap.parse_args()
    C.header("make repro after set-up (dvc repro dvc.yaml, default params: 1,327 synthetic images)")
    runs = {"now": repro({}, args.keep)}
    if args.cache_type:
        runs[f"now, DVC cache.type {args.cache_type}"] = repro({}, False, args.cache_type)
    if args.before:
        runs[f"before ({args.before_rev})"] = repro(C.code_env(args.before_rev), False)
    for label, r in runs.items():
        rows = [[name, dt] for name, dt in r["commands"]]
        cmd = sum(dt for _, dt in r["commands"])
        rows += [["stage commands, total", cmd], ["DVC's own share (total less the commands)", r["total"] - cmd],
                 [f"dvc repro, {len(r['commands'])} stages", r["total"]],
                 ["dvc repro again, nothing changed", r["again"]]]
        rcmd = sum(dt for _, dt in r["rebuild_commands"])
        rows += [[f"rebuild (every stage after synth, forced): {name}", dt] for name, dt in r["rebuild_commands"]]
        rows += [["rebuild: stage commands, total", rcmd], ["rebuild: DVC's own share", r["rebuild"] - rcmd],
                 [f"rebuild: dvc repro -f -s, {len(r['rebuild_commands'])} stages",
                  r["rebuild"]]]
        C.table([f"{label}: stage", "wall s"], rows)
        print(f"   {label}: {r['total']:.1f} s from nothing, {r['rebuild']:.1f} s to rebuild after synth "
              f"(goal: under 20 s); DVC per stage {(r['total'] - cmd) / max(1, len(r['commands'])):.2f} s; "
              "outputs vs the checkout's dvc.lock: "
              + ("identical" if not r["differ"] else f"DIFFER: {', '.join(r['differ'])}")
              + f" ({r['n_outs']} outs); load {r['load']}")


if __name__ == "__main__":
    main()
