"""The one error type of the data layer: it always names the file and the field at fault."""

from __future__ import annotations

from os import PathLike


class DataError(ValueError):
    """Malformed or inconsistent input data.

    The message reads ``<source>: <where>: <problem>`` so a user sees which file and which field failed.
    """

    def __init__(self, source: str | PathLike[str], where: str, problem: str) -> None:
        self.source = str(source)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.source}: {where}: {problem}")
