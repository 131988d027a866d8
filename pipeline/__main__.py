"""`sirst5k` and `python -m sirst5k`: the command line, or one line saying what it needs.

A loader-only install (`pip install --no-deps sirst5k` with numpy, h5py and torch) has no
typer or dask: the command then says what to install instead of a ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util
import os
import sys

# What the command line imports, by import name (distribution names in the message).
NEEDED = {"typer": "typer", "rich": "rich", "dask": "dask[distributed]", "distributed": "dask[distributed]",
          "PIL": "pillow", "skimage": "scikit-image", "numpy": "numpy", "h5py": "h5py"}


def missing_packages() -> list[str]:
    return sorted({dist for name, dist in NEEDED.items() if importlib.util.find_spec(name) is None})


# glibc's malloc hands arrays over 128 KiB (up to 32 MiB as it adapts) out as fresh mmaps and
# unmaps them when freed, so every shard's image batch, mask copy and label array is new memory
# that the kernel must fault in and zero (a fifth of the SIRST recipe's CPU was the kernel's, and
# clear_page its largest part). A command allocates and frees the same few sizes shard after
# shard: served from the heap and kept there, they are reused as they are. The heap keeps at most
# the command's peak, which it reached anyway; dask's workers (their own processes, which trim
# on purpose for their memory monitor) and library use (`import sirst5k`) are not affected.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
HEAP_ARRAYS_UP_TO = 256 << 20
KEEP_FREED_UP_TO = 1 << 30


def reuse_freed_memory() -> bool:
    """Keep big allocations on the heap and freed memory in it (glibc; elsewhere nothing): True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_ARRAYS_UP_TO) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_UP_TO))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def main(argv: list[str] | None = None) -> None:
    reuse_freed_memory()
    # Tasks that run in this process run as on a worker, with one BLAS thread (runner.cluster's
    # WORKER_ENV); OpenBLAS reads its setting only when numpy loads, so it is set before anything
    # imports numpy. It also spares every command the start of a BLAS pool it never uses
    # (~0.07 s of `import numpy` on the 2-core machine) and its pool's fork in the task lanes.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    missing = missing_packages()
    if missing:
        print(f"sirst5k: the command line needs {', '.join(missing)}, which this install lacks "
              f"(a loader-only install?): pip install {' '.join(repr(m) if '[' in m else m for m in missing)}",
              file=sys.stderr)
        raise SystemExit(2)
    from sirst5k.stages.cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
