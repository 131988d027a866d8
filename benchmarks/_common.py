"""Shared helpers of the benchmark scripts: the machine, the load, test data, tables.

Benchmark data is built once under $SIRST5K_BENCH_DIR (default /tmp/sirst5k-bench) from the real
SIRST v1 images in $SIRST5K_DATA (default ../shared/data): the 427 images and masks resized to
256x256 and saved as a DNANet-layout folder (RGB-encoded grey PNGs, six-digit ids, as NUDT-SIRST
and the original scripts expect), repeated `copies` times with distinct ids.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BIN = Path(sys.executable).parent


def data_root() -> Path:
    env = os.environ.get("SIRST5K_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "sirst" / "images").is_dir():
        sys.exit(f"benchmark data not found: set SIRST5K_DATA to the shared data folder (tried {root})")
    return root


def bench_dir() -> Path:
    path = Path(os.environ.get("SIRST5K_BENCH_DIR", "/tmp/sirst5k-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    """The 1/5/15-minute load averages: other users of a shared machine skew every figure."""
    try:
        a, b, c = os.getloadavg()
        return f"{a:.1f}/{b:.1f}/{c:.1f}"
    except OSError:
        return "n/a"


def machine() -> str:
    return (f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; load {load()}")


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)
    print(f"   machine: {machine()}", flush=True)


def progress(message: str) -> None:
    print(f"   .. {message} (load {load()})", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a Markdown table (pastes straight into the README)."""
    rows = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(headers))
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in rows:
        print(line(r))
    sys.stdout.flush()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def sirst_set(copies: int = 1, size: int = 256, train_only: bool = False) -> Path:
    """The SIRST v1 images at `size`, `copies` times, as a DNANet-layout folder (cached).

    Ids are six digits (copy c of image i is `c * 1000 + i + 1`, zero-padded) so that the
    original scripts, which cut names to their first six characters, see distinct ids. Train ids
    come from SIRST's trainval list, test ids from its test list. With `train_only` the folder
    holds only train images (the input of the original scripts).
    """
    name = f"sirst-x{copies}-{size}" + ("-train" if train_only else "")
    root = bench_dir() / name
    if (root / ".complete").is_file():
        return root
    base = _sirst_base(size)
    tmp = root.with_name(f".{name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    (tmp / "50_50").mkdir()
    splits: dict[str, list[str]] = {"train": [], "test": []}
    for c in range(copies):
        for i, (stem, split) in enumerate(base["order"]):
            if train_only and split != "train":
                continue
            sid = f"{c * 1000 + i + 1:06d}"
            os.link(base["dir"] / "images" / f"{stem}.png", tmp / "images" / f"{sid}.png")
            os.link(base["dir"] / "masks" / f"{stem}.png", tmp / "masks" / f"{sid}.png")
            splits[split].append(sid)
    for split, ids in splits.items():
        (tmp / "50_50" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp / ".complete").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def _sirst_base(size: int) -> dict:
    """The 427 SIRST images resized once (bilinear; masks nearest), RGB-encoded grey PNGs."""
    import numpy as np
    from PIL import Image

    from sirst5k.formats.imageio import read_grey, read_mask, resize_image, resize_mask

    src = data_root() / "sirst"
    out = bench_dir() / f"sirst-base-{size}"
    trainval = [s.strip() for s in (src / "idx_427" / "trainval.txt").read_text().splitlines() if s.strip()]
    test = [s.strip() for s in (src / "idx_427" / "test.txt").read_text().splitlines() if s.strip()]
    order = [(s, "train") for s in trainval] + [(s, "test") for s in test]
    if not (out / ".complete").is_file():
        shutil.rmtree(out, ignore_errors=True)
        (out / "images").mkdir(parents=True)
        (out / "masks").mkdir()
        for stem, _ in order:
            img = resize_image(read_grey(src / "images" / f"{stem}.png"), size)
            mask, _ = read_mask(src / "masks" / f"{stem}_pixels0.png")
            mask = resize_mask(mask, size)
            Image.fromarray(np.repeat(img[:, :, None], 3, axis=2)).save(out / "images" / f"{stem}.png")
            Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
        (out / ".complete").write_text("")
    return {"dir": out, "order": order}


#: Commands run as a normal install runs them: with their modules' bytecode cached. This machine
#: sets PYTHONDONTWRITEBYTECODE=1, so every command would compile the project's ~25 modules again
#: (0.05-0.09 s a command; pip-installed packages ship their bytecode). The cache goes under the
#: bench dir, not into the source tree (DVC hashes pipeline/runner as a folder).
def bytecode_env() -> dict:
    return {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(bench_dir() / "pycache")}


def sirst5k(*args: object, env: dict | None = None, check: bool = True) -> tuple[float, str]:
    """Run the `sirst5k` command line in a subprocess; (wall seconds, output)."""
    wall, _, text = sirst5k_cpu(*args, env=env, check=check)
    return wall, text


def sirst5k_cpu(*args: object, env: dict | None = None, check: bool = True) -> tuple[float, float, str]:
    """Run the `sirst5k` command line in a subprocess; (wall seconds, CPU seconds, output).

    CPU: user + system time of the command and every process it waited for (its LocalCluster's
    workers included), which other users of a shared machine disturb less than wall time.
    Environment values of None remove the variable.
    """
    import resource

    # `python -m sirst5k`: what the `sirst5k` console script runs
    cmd = [sys.executable, "-m", "sirst5k", *map(str, args)]
    full_env = {**os.environ, "DVC_NO_ANALYTICS": "1", **bytecode_env(), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=REPO)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return dt, cpu, proc.stdout + proc.stderr


def noise_bank() -> Path:
    """A noise bank from the real SIRST-V2 frames (temporal 2, as the README advises), cached."""
    out = bench_dir() / "noise_bank.h5"
    if not out.is_file():
        sirst5k("noise-bank", data_root() / "sirst-v2-frames", "--out", out, "--temporal", 2, "--workers", 2)
    return out


#: SIRST5K_CLUSTER for a run with every stage's tasks on a fresh LocalCluster (what every stage
#: did before small work ran in the command's own process).
PER_STAGE_CLUSTER = {"SIRST5K_CLUSTER": "always"}


def code_env(rev: str) -> dict:
    """Environment that runs the code of git revision `rev` instead of the working tree: its
    files (`git archive`, cached under the bench dir) laid out as the installed package, first on
    PYTHONPATH (the editable install's finder comes after it). Workers inherit it. For "before"
    figures measured beside "after" ones in the same run."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    root = bench_dir() / f"code-{sha}"
    if not (root / ".complete").is_file():
        shutil.rmtree(root, ignore_errors=True)
        (root / "src").mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root / "src")], input=archive, check=True)
        (root / "path").mkdir()
        (root / "path" / "sirst5k").symlink_to(root / "src" / "pipeline")
        (root / "src" / "pipeline" / "stages").symlink_to(root / "src" / "stages")
        (root / ".complete").write_text(sha)
    path = os.pathsep.join(p for p in (str(root / "path"), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "SIRST5K_CLUSTER": None}


def ingest_shards(copies: int = 1) -> Path:
    """SIRST at 256 as ingest shards (cached)."""
    root = bench_dir() / f"ingest-x{copies}"
    if not (root / "stage.json").is_file():
        sirst5k("ingest", sirst_set(copies), "--out", root, "--size", 256, "--workers", 2)
    return root


def transfer_shards(copies: int = 1) -> Path:
    """Realistic train shards (256 samples each): SIRST at 256, noise-transferred at m = 0.1 (cached)."""
    root = bench_dir() / f"transfer-x{copies}"
    if not (root / "stage.json").is_file():
        sirst5k("transfer", ingest_shards(copies), "--noise-bank", noise_bank(), "--out", root, "--device", "cpu",
                "--workers", 2)
    return root


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / (1 << 20)


def parse_count(output: str, word: str) -> int:
    m = re.search(rf"{word}: (\d+) samples", output)
    return int(m.group(1)) if m else -1


@contextlib.contextmanager
def dask_cluster(workers: int, preload: Sequence[str] = ("sirst5k.stages.ingest", "sirst5k.stages.noise_bank", "sirst5k.stages.transfer",
                                                          "sirst5k.stages.negatives", "sirst5k.stages.publish")):
    """A `dask scheduler` and `workers` one-thread `dask worker` processes on 127.0.0.1, the stage
    modules preloaded (torch imported once per worker, not once per stage).

    Yields (address, seconds until every worker had registered): what a user pays once when
    every stage runs with `--scheduler`.
    """
    import json
    import tempfile

    from distributed import Client

    dask_bin = BIN / "dask"
    from sirst5k.runner.cluster import WORKER_ENV

    env = {**os.environ, **WORKER_ENV}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:
        info = Path(tmp) / "scheduler.json"
        t = time.perf_counter()
        try:
            procs.append(subprocess.Popen([str(dask_bin), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                           "--scheduler-file", str(info), "--no-dashboard"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO))
            while not (info.is_file() and info.stat().st_size > 0):
                time.sleep(0.05)
            address = json.loads(info.read_text())["address"]
            for i in range(workers):
                args = [str(dask_bin), "worker", "--scheduler-file", str(info), "--nthreads", "1", "--no-nanny",
                        "--no-dashboard", "--local-directory", f"{tmp}/w{i}"]
                for module in preload:
                    args += ["--preload", module]
                procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                              cwd=REPO))
            with Client(address, timeout="30s") as client:
                client.wait_for_workers(workers, timeout=120)
            yield address, time.perf_counter() - t
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
