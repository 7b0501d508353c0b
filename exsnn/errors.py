"""The exsnn error hierarchy: what a user can act on, as opposed to bugs.

Every error here means "the input, the configuration or the electronic structure is at fault", names where, and is
shown by the command line as ``exsnn: error: MESSAGE`` with exit code 2 (and no traceback unless ``--traceback``).
Anything else that escapes is a bug in exsnn and is shown with its traceback.

========================  ===============================================================================
ExsnnError                base class
DataError                 a malformed or inconsistent file (``FILE: FIELD: PROBLEM``)
ConfigurationError        an impossible setting or option (``OPTION-or-FILE: FIELD: PROBLEM``)
ElectronicStructureError  a quantum-chemistry calculation that cannot give trustworthy results
========================  ===============================================================================

DataError and ConfigurationError are also ValueErrors, so code that guards numerical helpers with
``except ValueError`` keeps working.
"""

from __future__ import annotations

from os import PathLike


class ExsnnError(Exception):
    """Base of the errors a user can act on."""


def _located(source: str | PathLike[str] | None, where: str | None, problem: str) -> str:
    return ": ".join(str(part) for part in (source, where, problem) if part not in (None, ""))


class DataError(ExsnnError, ValueError):
    """Malformed or inconsistent input data; the message reads ``<source>: <where>: <problem>``."""

    def __init__(self, source: str | PathLike[str], where: str, problem: str) -> None:
        self.source = str(source)
        self.where = where
        self.problem = problem
        super().__init__(_located(source, where, problem))


class ConfigurationError(ExsnnError, ValueError):
    """An impossible setting: ``ConfigurationError(problem, source=None, where=None)`` reads
    ``<source>: <where>: <problem>`` with the parts that are given (source: a file or a command-line option)."""

    def __init__(self, problem: str, source: str | PathLike[str] | None = None, where: str | None = None) -> None:
        self.source = None if source is None else str(source)
        self.where = where
        self.problem = problem
        super().__init__(_located(source, where, problem))


class ElectronicStructureError(ExsnnError, RuntimeError):
    """A quantum-chemistry calculation failed (SCF not converged, missing roots, ...); `reason` says why."""

    def __init__(self, reason: str, source: str | PathLike[str] | None = None) -> None:
        self.reason = reason
        self.source = None if source is None else str(source)
        super().__init__(_located(source, None, reason))


class ExsnnWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as ``exsnn: warning: ...``)."""


__all__ = ["ConfigurationError", "DataError", "ElectronicStructureError", "ExsnnError", "ExsnnWarning"]
