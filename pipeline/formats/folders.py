"""Folders as datasets come: entries in natural order, hidden files left out, and a folder that
cannot be listed (missing, not a folder, empty, no permission) as one line naming it.

Shared by the labelled layouts (`formats.layouts`) and the frame folders (`formats.frames`).
"""

from __future__ import annotations

import re
from pathlib import Path

from sirst5k.errors import InputError


def natural_key(text: str) -> tuple:
    """Sort key that orders `a2` before `a10`."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t)


def visible(folder: Path) -> list[Path]:
    """The entries of `folder` not starting with ".", in natural order of their names."""
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    except PermissionError:
        raise InputError(folder, "cannot list folder: permission denied") from None
    except OSError as err:
        raise InputError(folder, f"cannot list folder: {err.strerror or err}") from None


def check_root(root: Path) -> list[Path]:
    """The visible entries of a dataset's root folder; InputError when it is missing, a file or empty."""
    if not root.exists():
        raise InputError(root, "no such folder")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    entries = visible(root)
    if not entries:
        raise InputError(root, "folder is empty")
    return entries


def describe(entries: list[Path], limit: int = 12) -> str:
    """What a folder holds, for an error message: the first `limit` names, folders with a "/"."""
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
