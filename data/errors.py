"""The one exception type raised for unusable data files."""

from __future__ import annotations

import os
from pathlib import Path


class DataError(ValueError):
    """A data file is missing, corrupted or malformed.

    ``str(err)`` is always one line, ``"<file name>: <problem>"``, e.g.
    ``ETTh1.csv: column 'OT' is missing``.
    """

    def __init__(self, file: str | os.PathLike[str], problem: str) -> None:
        self.file = Path(file).name or str(file)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.file}: {self.problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        # Keep the exception picklable (e.g. when it crosses Ray worker boundaries).
        return (type(self), (self.file, self.problem))
