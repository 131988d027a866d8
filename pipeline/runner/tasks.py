"""The skeletons every shard stage shares: one task per shard, and the command around the tasks.

A shard task is: compute its key (what it reads and how), reuse its output when a finished
shard already carries that key (a rerun after a crash), else read, compute, write, and return
the record of what it wrote. Only records travel back to the client, never arrays.

A stage command is: check the options, stage its output folder (`staged_folder`: temporary
name, lock, ownership checks), plan one task per shard, run the tasks (`StageRun.run`: here, or
on a cluster when the work is big or a scheduler is given), write `stage.json` and swap the
folder into place.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from sirst5k.runner.outputs import read_stage_record, staged_folder, write_stage_record


@dataclass(frozen=True)
class TaskResult:
    """What a shard task sends back: the shards it wrote (or reused) and where it computed.

    shards: `sirst5k.formats.shards.ShardInfo` records. device: "cpu" / "cuda" when it
    computed, None when every output was reused. extra: small stage-specific notes (warnings).
    """

    shards: tuple[Any, ...]
    device: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def reuse_shard(path: str | Path, key: str) -> TaskResult | None:
    """The finished shard at `path` when it was written for exactly this task key, else None."""
    from sirst5k.formats import shards

    if not shards.is_complete(path, key):
        return None
    return TaskResult((shards.shard_info(path),))


def reuse_parts(folder: str | Path, prefix: str, key: str) -> TaskResult | None:
    """The finished parts `<prefix>-NNN.h5` of one task, when all of them carry this key and
    none is missing (each part records how many parts its task wrote); otherwise the stale
    parts are removed and None is returned."""
    from sirst5k.formats import shards

    done = sorted(Path(folder).glob(f"{prefix}-*{shards.SHARD_SUFFIX}"))
    if done and all(shards.is_complete(p, key) for p in done) and \
            int(shards.read_attrs(done[0]).get("n_parts", -1)) == len(done):
        return TaskResult(tuple(shards.shard_info(p) for p in done))
    for p in done:
        p.unlink()
    return None


def shard_records(results: Iterable[TaskResult], split: str | None = None) -> list[dict[str, Any]]:
    """`stage.json` entries `{path, sha256, n_samples[, split]}` of the tasks' shards, in task order."""
    return [info.record(split) for r in results for info in r.shards]


def computed_on(results: Sequence[TaskResult]) -> str:
    """`[computed on cuda]`-style note (reused shards computed nothing)."""
    devices = sorted({r.device for r in results if r.device})
    return f" [computed on {', '.join(devices)}]" if devices else " [all shards reused]" if results else ""


class StageRun:
    """One run of a shard stage: its staging folder, and where its tasks run (`run`)."""

    def __init__(self, folder: Path, stack: contextlib.ExitStack, workers: int | None, scheduler: str | None,
                 device: str):
        from sirst5k.runner.cluster import Runner

        self.folder = folder
        self._device = device
        self.runner = Runner(stack, workers, scheduler, device)

    @property
    def client(self):
        """The dask client of this run's cluster (opened now if no task list opened one)."""
        return self.runner.client

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop crash leftovers and shards of an earlier, different plan from the staging folder."""
        from sirst5k.formats import shards

        shards.remove_stale(self.folder, names)

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple], label: str, *, gpu: bool = False) -> list[Any]:
        """fn(*args) for every args in `tasks`; results in task order.

        Where they run is decided here, by the size of the work (`sirst5k.runner.cluster.Runner.run`):
        a given scheduler takes them all; otherwise they run in this process while the work left
        looks short, and the rest moves to a LocalCluster of at most `--workers` processes once it
        does not. The bytes they write are the same either way.
        """
        return self.runner.run(fn, tasks, label, gpu=gpu and self._device != "cpu")

    def record(self, stage: str, params: Mapping[str, Any], inputs: Mapping[str, Any],
               records: list[dict[str, Any]]) -> None:
        write_stage_record(self.folder, stage, dict(params), dict(inputs), records)


@contextlib.contextmanager
def shard_stage(out: Path, stage: str, inputs: Sequence[Path] = (), *, workers: int | None = None,
                scheduler: str | None = None, device: str = "cpu", overwrite: bool = False) -> Iterator[StageRun]:
    """Stage `out` for `stage` (refusing what it must not replace), yield the run, then swap it in.

    The cluster (if one was opened) is closed before the swap, so a stage's output appears only
    once every task has finished.
    """
    from sirst5k.runner.cluster import check_scheduler_address, cluster_mode

    cluster_mode()  # a bad SIRST5K_CLUSTER, and a malformed address, are one line before anything is created
    if scheduler:
        check_scheduler_address(scheduler)
    with staged_folder(out, stage=stage, inputs=inputs, overwrite=overwrite) as tmp:
        with contextlib.ExitStack() as stack:
            yield StageRun(tmp, stack, workers, scheduler, device)


def upstream_record(folder: Path) -> dict[str, Any]:
    """The `stage.json` of an input shard folder (empty when it has none), for chaining provenance."""
    return read_stage_record(folder) or {}


# A part (or shard) of images larger than 256 x 256 (native-size shards) holds at most this many
# image pixels (64 MiB: what 1,024 samples of 256 x 256, the default part, hold), so a worker's memory
# stays within that of the default at any image size; parts of images up to 256 x 256 are cut
# by --shard-size alone, as before.
PART_PIXELS = 1024 * 256 * 256


def part_size(shard_size: int, image_size: tuple[int, int]) -> int:
    """Samples per output part or shard (negatives, publish): --shard-size, and for images larger than 256 x 256 at most
    PART_PIXELS of image pixels (at least one sample)."""
    pixels = int(image_size[0]) * int(image_size[1])
    if pixels <= 256 * 256:
        return int(shard_size)
    return max(1, min(int(shard_size), PART_PIXELS // pixels))
