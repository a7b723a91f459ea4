"""The one error type for bad input: it names the file and the problem."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input data or configuration.

    ``str(err)`` is ``"<path>: <problem>"`` so that a user sees which file is
    wrong and why, whatever layer raised it.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")
