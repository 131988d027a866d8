"""Errors a user sees as one line: the file and the problem, no traceback."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input data. `str(err)` is the one line shown to the user."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # pickled as its two fields (a task lane sends it back whole)
        return type(self), (self.path, self.problem)


class OutputError(Exception):
    """The output location cannot be written (permissions, disk full)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)
