"""Writing a stage's output folder so that readers never see it half-done.

A stage writes into a hidden sibling `.NAME.partial/` and swaps it into place when every task
has finished. A crash (kill -9, lost machine) leaves the partial folder; the next run picks it
up and reuses each shard whose `task_key` still matches, so it finishes the job and writes the
same bytes an uninterrupted run would. A bad input or an unwritable disk removes the partial
folder: nothing half-written stays behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

from sirst5k.errors import InputError, OutputError


PROBE_PREFIX = ".probe-"
# A task's notes about an output it wrote (`.NAME.scratch`): kept while a stage runs, so a rerun
# after a crash that reuses the output can read them, and removed when the stage completes.
SCRATCH_MARK = ".scratch"


def scratch_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{SCRATCH_MARK}")


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    out = Path(out)
    tmp = partial_dir(out)
    resumed = tmp.is_dir()
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        probe = tmp / f"{PROBE_PREFIX}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        if not resumed:
            shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(out, f"cannot write output folder: {err.strerror or err}") from err
    _remove_old_swaps(out)
    try:
        yield tmp
    except (InputError, OutputError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OutputError):
            # the partial folder is gone: name the file where the user will look for it
            path = out / Path(err.path).relative_to(tmp) if _inside(err.path, tmp) else err.path
            raise OutputError(path, one_line(err.problem)) from err
        raise
    _remove_temporaries(tmp)
    swap_into_place(tmp, out)


_ERRNO = re.compile(r"errno = (\d+)")


def one_line(problem: str) -> str:
    """An HDF5 error spans lines and buries its cause (`..., errno = 28, ...`): keep the cause."""
    if "\n" not in problem:
        return problem
    found = _ERRNO.search(problem)
    if found:
        head = problem.split(":", 1)[0] if ":" in problem else "cannot write"
        return f"{head}: {os.strerror(int(found.group(1)))}"
    return " ".join(problem.split())


def _inside(path: str | Path, folder: Path) -> bool:
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True


def _remove_temporaries(folder: Path) -> None:
    """Files a lost worker or a killed run left under a temporary name (`.NAME.partial-PID`,
    `.probe-PID`), and the tasks' scratch notes (`.NAME.scratch`): never part of an output."""
    for p in folder.iterdir():
        temporary = p.name.startswith(PROBE_PREFIX) or (
            p.name.startswith(".") and (".partial" in p.name or p.name.endswith(SCRATCH_MARK)))
        if temporary and p.is_file():
            p.unlink(missing_ok=True)


def _remove_old_swaps(out: Path) -> None:
    """A run killed inside `swap_into_place` leaves the previous output as `.NAME.old-PID`."""
    for old in out.parent.glob(f".{out.name}.old-*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def check_can_create(path: str | Path) -> None:
    """Fail now, creating nothing, when `path` (a file still to be written) cannot be created:
    its nearest existing ancestor is not a folder, or is not writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, f"cannot write: {os.strerror(errno.EISDIR)}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(path, f"cannot write: {os.strerror(errno.ENOTDIR)} ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, f"cannot write: {os.strerror(errno.EACCES)} ({parent})")


def swap_into_place(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        if out.exists() or out.is_symlink():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as err:
        raise OutputError(out, f"cannot move finished output into place: {err.strerror or err}") from err
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists():
        old.unlink()


def task_key(*parts: Any) -> str:
    """Identity of one task's work: what it reads (content hashes) and how (params, producer)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def hash_files(paths: Iterable[str | Path]) -> str:
    """Content hash of input files, in order (names excluded, so moving a dataset keeps it)."""
    digest = hashlib.sha256()
    for p in paths:
        try:
            with open(p, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except OSError as err:
            raise InputError(p, f"cannot read: {err.strerror or err}") from err
        digest.update(b"\x00")
    return digest.hexdigest()


STAGE_RECORD = "stage.json"


def write_stage_record(folder: Path, stage: str, params: dict, inputs: dict, shards: list[dict]) -> None:
    """`stage.json` in a shard folder: what made it, from what, and each shard's checksum.

    Later stages read it to chain provenance and checksums without re-hashing every shard.
    """
    from sirst5k.formats.manifest import write_json_atomic

    write_json_atomic(
        Path(folder) / STAGE_RECORD,
        {"stage": stage, "params": params, "inputs": inputs, "shards": sorted(shards, key=lambda s: s["path"])},
    )


def read_stage_record(folder: Path) -> dict | None:
    path = Path(folder) / STAGE_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read stage record: {err}") from err


def input_shards(folder: Path, split: str) -> list[tuple[Path, str]]:
    """(path, sha256) of a shard folder's split, from its stage record when it has one."""
    from sirst5k.formats.shards import list_shards, sha256_file

    paths = list_shards(folder, split)
    if not paths:
        raise InputError(folder, f"no {split} shards ({split}-*.h5)")
    record = read_stage_record(folder)
    known = {s["path"]: s["sha256"] for s in record["shards"]} if record else {}
    return [(p, known.get(p.name) or sha256_file(p)) for p in paths]
