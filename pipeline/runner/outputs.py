"""Writing a stage's output folder so that readers never see it half-done.

A stage writes into a hidden sibling `.NAME.partial/` and swaps it into place when every task
has finished. A crash (kill -9, lost machine) leaves the partial folder; the next run picks it
up and reuses each shard whose `task_key` still matches, so it finishes the job and writes the
same bytes an uninterrupted run would. A bad input or an unwritable disk removes the partial
folder: nothing half-written stays behind.

A stage writes only where it owns the place (`check_output_folder`, `check_output_file`): never
over a file, an input, inside an input or over an ancestor of one; over an existing folder only
when the same stage wrote it (its `stage.json`, or `.NAME.stage.json` beside it) or it is empty,
unless the user says `--overwrite`. One writer per output (`output_lock`). Shards a stage reads
are checked against the record of the stage that wrote them (`input_shards`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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


def lock_path(out: str | Path) -> Path:
    """The lock of one output (`.NAME.lock` beside it and its staging folder): one writer at a time."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def owner_path(out: str | Path) -> Path:
    """`.NAME.stage.json` beside an output folder that holds no `stage.json` of its own (synth's
    DNANet folders, a report, a published dataset): which stage wrote it, and a fingerprint of what
    it wrote. Beside, not inside, so the folder's bytes (its DVC hash) are the stage's alone."""
    out = Path(out)
    return out.parent / f".{out.name}{OWNER_SUFFIX}"


OWNER_SUFFIX = ".stage.json"


@contextlib.contextmanager
def staged_folder(out: str | Path, stage: str | None = None, inputs: Sequence[str | Path] = (),
                  overwrite: bool = False, resume: bool = True) -> Iterator[Path]:
    """Write a stage's output folder under a temporary name; swap it into place when the block ends.

    Before anything is created, `check_output_folder` refuses an `out` the stage must not replace
    (a file, an input, inside an input or an ancestor of one; with `stage`, a non-empty folder that
    is not this stage's earlier output unless `overwrite`). Then the output's lock is taken for the
    whole block: a second writer of the same `out` gets one line naming the holder's pid and
    touches nothing; the lock of a process that died is free again (flock) and taken over.

    resume: reuse the staging folder a killed run left (its finished shards); False starts afresh.
    stage=None: no ownership check (an existing folder is replaced), for callers with a policy of
    their own (export) and for commands not yet wired to a stage name.
    """
    out = Path(out)
    check_output_folder(out, stage, inputs, overwrite)
    tmp = partial_dir(out)
    with output_lock(out):  # makes out's parent folder first
        if tmp.is_dir() and not tmp.is_symlink() and not resume:
            shutil.rmtree(tmp, ignore_errors=True)
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
        except BaseException:
            # interrupted (Ctrl-C, a lost cluster): keep finished work to resume from, not an empty folder
            if tmp.is_dir() and not _holds_files(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        _remove_temporaries(tmp)
        swap_into_place(tmp, out)
        if stage is not None:
            # the output is in place: a record that cannot be written only means the next run over
            # it asks for --overwrite
            with contextlib.suppress(OutputError):
                record_owner(out, stage)


def check_output_folder(out: str | Path, stage: str | None = None, inputs: Sequence[str | Path] = (),
                        overwrite: bool = False) -> None:
    """Refuse, with one line and before anything is created, an output folder a stage must not replace.

    Always refused: an existing file (or a link to one, or a dangling link), an input, a folder
    inside an input, an ancestor of an input (symlinks resolved; `--out .` in a folder holding the
    input). With `stage` and without `overwrite`, also a non-empty folder that is not an earlier
    output of `stage` (its `stage.json`, or the record beside it, `owner_path`, says so).
    """
    out = Path(out)
    check_not_input(out, inputs)
    if out.is_symlink() and not out.exists():
        raise OutputError(out, "is a dangling symbolic link; the output must be a folder or absent")
    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is a file, not a folder; the output names a folder")
    if stage is None or overwrite or not out.is_dir():
        return
    try:
        empty = not any(out.iterdir())
    except OSError as err:
        raise OutputError(out, f"cannot read output folder: {err.strerror or err}") from err
    if empty:
        return
    owner, why = folder_owner(out)
    if owner != stage:
        raise OutputError(out, f"folder is not empty and is not an earlier output of {stage} ({why}); "
                               "--overwrite replaces it")


def check_not_input(out: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output that is an input, lies inside one or holds one, as typed or with links resolved."""
    for given in inputs:
        if given is None:
            continue
        relation = _relation(Path(out), Path(given))
        if relation == "is":
            raise OutputError(out, f"is the input {given}; choose another output")
        if relation == "inside":
            raise OutputError(out, f"is inside the input {given}; a stage never writes into its input")
        if relation == "holds":
            raise OutputError(out, f"holds the input {given}; an output never holds its input (writing or replacing it could delete the input)")


def _relation(out: Path, given: Path) -> str | None:
    for a, b in ((Path(os.path.abspath(out)), Path(os.path.abspath(given))), (out.resolve(), given.resolve())):
        if a == b:
            return "is"
        if b in a.parents:
            return "inside"
        if a in b.parents:
            return "holds"
    return None


def folder_owner(out: str | Path) -> tuple[str | None, str]:
    """(stage that wrote this folder, or None; the reason in words for a refusal)."""
    out = Path(out)
    record = out / STAGE_RECORD
    if record.is_file():
        try:
            doc = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None, f"its {STAGE_RECORD} cannot be read"
        stage = doc.get("stage") if isinstance(doc, dict) else None
        if not isinstance(stage, str):
            return None, f"its {STAGE_RECORD} names no stage"
        return stage, f"its {STAGE_RECORD} says {stage} wrote it"
    side = owner_path(out)
    if side.is_file():
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
            stage, tree = doc["stage"], doc["tree"]
            files = doc.get("files")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            return None, f"{side.name} beside it cannot be read"
        if isinstance(files, list):
            # Files the stage wrote may be gone (DVC deletes a stage's declared outputs before it
            # reruns it); only a file it did not write, or one whose size changed, is someone else's.
            if not set(tree_entries(out)) <= set(files):
                return None, f"its files changed since {stage} wrote it"
        elif tree != tree_fingerprint(out):
            return None, f"its files changed since {stage} wrote it"
        return stage, f"{stage} wrote it"
    if _is_published_dataset(out):
        # a dataset folder published before records were kept beside it describes itself
        return "publish", "a published dataset"
    return None, f"no {STAGE_RECORD}: not written by a sirst5k stage"


def _is_published_dataset(folder: Path) -> bool:
    from sirst5k.formats.manifest import IN_DATASET_NAME, REQUIRED

    try:
        doc = json.loads((folder / IN_DATASET_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in REQUIRED) and doc.get("dataset_dir") == "."


def tree_fingerprint(folder: str | Path) -> str:
    """A hash of every file's relative path and size under `folder` (links as links): which files a
    stage left there. Same files, same fingerprint, so two clean runs write the same record.

    Another stage's output inside it (a report in `DATASET/report`, marked by its own record
    `.report.stage.json`) and that stage's lock or staging folder are left out: they do not make
    the folder someone else's."""
    return hashlib.sha256("\n".join(tree_entries(folder)).encode()).hexdigest()


def tree_entries(folder: str | Path) -> list[str]:
    """The entries `tree_fingerprint` hashes: `kind:relative path:size`, sorted by walk order."""
    folder = Path(folder)
    entries = []
    for root, dirs, files in os.walk(folder):
        marked = {f[1 : -len(OWNER_SUFFIX)] for f in files if f.startswith(".") and f.endswith(OWNER_SUFFIX)}
        nested = marked | {f"{name}.partial" for name in marked}
        dirs[:] = sorted(d for d in dirs if d not in marked and not (d.startswith(".") and d[1:] in nested))
        files = [f for f in files if not (f.startswith(".") and (f.endswith(OWNER_SUFFIX) or
                                                                 f[1:].removesuffix(".lock") in marked))]
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            try:
                st = p.lstat()
            except OSError:
                continue
            kind = "l" if p.is_symlink() else "f"
            entries.append(f"{kind}:{rel}:{st.st_size}")
    return entries


def record_owner(out: str | Path, stage: str) -> None:
    """Note beside `out` that `stage` wrote it, unless its own `stage.json` already says so."""
    out = Path(out)
    side = owner_path(out)
    doc = None
    record = out / STAGE_RECORD
    if record.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
            doc = json.loads(record.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and doc.get("stage") == stage:
        side.unlink(missing_ok=True)
        return
    _write_json(side, {"stage": stage, "folder": out.name, "tree": tree_fingerprint(out), "files": tree_entries(out)})


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(path, f"cannot write: {err.strerror or err}") from err


def _holds_files(folder: Path) -> bool:
    return any(not p.is_dir() or p.is_symlink() for p in folder.rglob("*"))


def check_output_file(path: str | Path, stage: str | None = None, inputs: Sequence[str | Path] = (),
                      overwrite: bool = False) -> None:
    """Refuse, before any work, a single-file output the stage must not replace (the noise bank's
    `--out FILE`, publish's `--manifest`): a folder, an input or a file inside an input folder, a
    place that cannot be created, or (with `stage`, without `overwrite`) an existing non-empty file
    that is not this stage's: an HDF5 file whose root attribute `stage` is `stage`, or for
    `publish` a sirst5k manifest."""
    path = Path(path)
    check_not_input(path, inputs)
    if path.is_dir():
        raise OutputError(path, "is a folder; the output names a file")
    check_can_create(path)
    if stage is None or overwrite or not path.is_file():
        return
    try:
        if path.stat().st_size == 0:
            return
    except OSError as err:
        raise OutputError(path, f"cannot read: {err.strerror or err}") from err
    owner, why = file_owner(path)
    if owner != stage:
        raise OutputError(path, f"exists and is not an earlier output of {stage} ({why}); --overwrite replaces it")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_owner(path: str | Path) -> tuple[str | None, str]:
    """(stage that wrote this file, or None; the reason in words for a refusal)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as err:
        return None, f"cannot read it: {err.strerror or err}"
    if head == HDF5_SIGNATURE:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                stage = f.attrs.get("stage")
        except OSError:
            return None, "an HDF5 file that cannot be opened"
        if isinstance(stage, bytes):
            stage = stage.decode(errors="replace")
        if not isinstance(stage, str):
            return None, "an HDF5 file without a sirst5k stage attribute"
        return stage, f"its stage attribute says {stage}"
    if head[:1] in (b"{", b" ", b"\n"):
        from sirst5k.formats.manifest import REQUIRED

        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None, "not a file sirst5k wrote"
        if isinstance(doc, dict) and all(k in doc for k in REQUIRED):
            return "publish", "a sirst5k manifest"
        if isinstance(doc, dict) and isinstance(doc.get("stage"), str):
            return doc["stage"], f"it says {doc['stage']} wrote it"
    return None, "not a file sirst5k wrote"


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the lock of one output (a folder or a single file) for the block: one writer at a time.

    The lock is an `flock` on `.NAME.lock` beside the output, which the kernel releases when its
    process dies, so a killed run's lock is free again and the next run takes it over. The holder
    writes its pid and host into the lock file; a second writer (another process, or this one
    again) gets one line naming them and leaves everything as it was. The lock file is removed
    when the block ends. The output's folder is made first (the lock lives in it). (The `filelock`
    package did this before: a dependency and its import, ~0.01 s of a stage command beside the
    modules a stage loads anyway, for a few lines of `fcntl`.)
    """
    out = Path(out)
    path = lock_path(out)
    _make_parent(out)
    fd = _take_lock(out, path)
    try:
        yield path
    finally:
        # removed while still held, so that no other run can lock this file after we let it go
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the flock


LOCK_TRIES = 8


def _make_parent(out: Path) -> None:
    """The folder `out` (and its lock) lives in, made if missing; OutputError if it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        # a file where a folder of the path should be: mkdir says "File exists", the cause is ENOTDIR
        reason = os.strerror(errno.ENOTDIR) if isinstance(err, FileExistsError) else err.strerror or err
        raise OutputError(out, f"cannot write output folder: {reason}") from err


def _take_lock(out: Path, path: Path) -> int:
    """The locked descriptor of `path`, with this process's note in it; OutputError if another
    run holds it or it cannot be made."""
    import fcntl

    def cannot(err: OSError) -> OutputError:
        return OutputError(out, f"cannot write output: {err.strerror or err} (its lock {path.name})")

    for _ in range(LOCK_TRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise cannot(err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_holder(path)
            who = f"pid {holder['pid']}" if holder and holder.get("pid") else "holder unknown"
            if holder and holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on {holder['host']}"
            raise OutputError(out, f"another sirst5k run ({who}) is writing it now; wait for it to finish, "
                                   f"or remove {path} if no such run exists") from None
        except OSError as err:
            os.close(fd)
            raise cannot(err) from err
        # The holder before us unlinks its file at the end, while it still holds it: if that
        # happened between our open and our flock, we hold a file no one else will see; take the
        # one at `path` instead.
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            with contextlib.suppress(OSError):
                _write_holder(fd)
            return fd
        os.close(fd)
    raise OutputError(out, f"cannot take its lock {path.name}: the file keeps being replaced")


def _write_holder(fd: int) -> None:
    note = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    # Truncate only a file that holds an old note: on ext4 a truncate to 0 makes close() start
    # writing the file back (auto_da_alloc), and that waits behind whatever the disk is writing;
    # measured 0.05-0.4 s at the release of a report's lock after a build.
    if os.fstat(fd).st_size:
        os.ftruncate(fd, 0)
    os.pwrite(fd, note, 0)


def _read_holder(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


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
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():
        old.unlink()  # a link is removed, never what it points to


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
    """(path, sha256) of a shard folder's split, each shard checked before use.

    Every shard must start with the HDF5 signature, and its sha256, computed here from its bytes,
    must equal the one the folder's `stage.json` recorded when its stage wrote it; a shard the
    record lists must be there, and one it does not list is refused. The digests returned are
    those of the bytes read, so what a later stage records (publish's version and shards_hash)
    describes the data it used, not a record that may be stale. A published dataset folder is
    checked against its `manifest.json` the same way; a folder with neither (shards from
    elsewhere) for the signature only. Any mismatch: InputError naming the shard. (Hashing runs
    at disk speed, ~1 GB/s warm: 0.3 s for the default publish inputs, 330 MB.)
    """
    from sirst5k.formats.shards import list_shards

    folder = Path(folder)
    paths = list_shards(folder, split)
    record = read_stage_record(folder)
    where = STAGE_RECORD
    if record is None:
        record, where = _dataset_record(folder), "manifest.json"
    known: dict[str, dict] | None = None
    if record is not None:
        entries = record.get("shards") if isinstance(record, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("path"), str)
                                                    for e in entries):
            raise InputError(folder / where, "the record has no list of shards")
        known = {e["path"]: e for e in entries}
        for name in sorted(known):
            if name.startswith(f"{split}-") and not (folder / name).is_file():
                raise InputError(folder / name, f"shard listed in {where} is missing")
    if not paths:
        raise InputError(folder, f"no {split} shards ({split}-*.h5)")
    for p in paths:
        _check_signature(p)
        if known is not None and p.name not in known:
            raise InputError(p, f"shard is not listed in {where} (left by another run, or copied in?)")
    digests = _sha256_many(paths)
    for p, digest in zip(paths, digests):
        want = known[p.name].get("sha256") if known is not None else None
        if known is not None and digest != want:
            raise InputError(p, f"sha256 {digest[:12]}... does not match {where}'s {str(want)[:12]}... "
                                "(changed since its stage wrote it)")
    return list(zip(paths, digests))


def _dataset_record(folder: Path) -> dict | None:
    """A published dataset folder records its shards in its own manifest.json: the same check."""
    from sirst5k.formats.manifest import IN_DATASET_NAME

    if not _is_published_dataset(folder):
        return None
    doc = json.loads((folder / IN_DATASET_NAME).read_text(encoding="utf-8"))
    splits = doc.get("splits")
    if not isinstance(splits, dict):
        raise InputError(folder / IN_DATASET_NAME, "manifest has no splits")
    try:
        return {"shards": [s for entry in splits.values() for s in entry["shards"]]}
    except (KeyError, TypeError) as err:
        raise InputError(folder / IN_DATASET_NAME, f"manifest splits lack their shards ({err})") from None


def _check_signature(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as err:
        raise InputError(path, f"cannot read shard: {err.strerror or err}") from err
    if not head:
        raise InputError(path, "shard is empty (0 bytes)")
    if head != HDF5_SIGNATURE:
        raise InputError(path, "not an HDF5 file (no HDF5 signature at its start)")


def _sha256_many(paths: Sequence[Path]) -> list[str]:
    """sha256 of each file, a few at a time (hashlib and file reads release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from sirst5k.formats.shards import sha256_file

    def one(p: Path) -> str:
        try:
            return sha256_file(p)
        except OSError as err:
            raise InputError(p, f"cannot read shard: {err.strerror or err}") from err

    if len(paths) < 2:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, len(paths))) as pool:
        return list(pool.map(one, paths))
