"""Potential specifications as the command line writes them: `PREFIX` or `PREFIX:ARGUMENT`.

The registry is one explicit table, prefix -> ``"module:function"``, imported only when a spec with that prefix is
loaded (so `exsnn --help` stays fast and this layer never imports the network or the quantum chemistry at import
time). A loader is called as ``loader(prefix, argument, base_dir, device, numbers)`` and returns a `Potential`;
`numbers` (atomic numbers) is given for potentials that do not fix the molecule themselves (trained models, PySCF).
A new backend is one line in `POTENTIALS` (or one `register_potential` call from outside the package).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exsnn.errors import ConfigurationError

if TYPE_CHECKING:  # the registry itself imports no backend (nor torch): `exsnn --help` stays fast
    from exsnn.potentials.base import Potential

Loader = Callable[..., "Potential"]


@dataclass(frozen=True)
class PotentialEntry:
    target: str  # "package.module:function"
    usage: str  # how the spec is written, for help texts and error messages


POTENTIALS: dict[str, PotentialEntry] = {
    "tully1": PotentialEntry("exsnn.potentials.tully:load", "tully1 (Tully's simple avoided crossing)"),
    "tully2": PotentialEntry("exsnn.potentials.tully:load", "tully2 (dual avoided crossing)"),
    "tully3": PotentialEntry("exsnn.potentials.tully:load", "tully3 (extended coupling with reflection)"),
    "lvc": PotentialEntry("exsnn.potentials.lvc:load", "lvc:PATH/TO/LVC.template (SHARC-format singlet LVC model)"),
    "model": PotentialEntry("exsnn.model.potential:load",
                            "model:DIR[,compile=1,neighbours=auto|all-pairs|cutoff,driver=mean|members|hamiltonian] "
                            "(a trained exsnn model or committee)"),
    "pyscf": PotentialEntry("exsnn.qm.potential:load",
                            "pyscf:METHOD/BASIS[,states=N,charge=Q,nacs=analytic|overlap|none,etf=0,stability=0,"
                            "workers=W,executor=local:N|dask-local:N|dask:ADDR,max_attempts=K]"),
}


def register_potential(prefix: str, target: str, usage: str = "") -> None:
    """Make `prefix:ARGUMENT` specs load with the function named by `target` ("module:function")."""
    POTENTIALS[prefix] = PotentialEntry(target, usage or f"{prefix}:ARGUMENT")


def known_prefixes() -> list[str]:
    return sorted(POTENTIALS)


def describe_prefixes() -> str:
    """One line per registered prefix: how a spec is written."""
    return "\n".join(f"  {entry.usage}" for _, entry in sorted(POTENTIALS.items()))


def resolve_path(argument: str, base_dir: Path) -> Path:
    """A spec's path argument, relative paths taken from `base_dir` (e.g. the folder of a TOML file)."""
    path = Path(argument).expanduser()
    return path if path.is_absolute() else base_dir / path


def _loader(prefix: str) -> Loader:
    module_name, _, function = POTENTIALS[prefix].target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def load_potential(spec: str, base_dir: str | Path = ".", device: str = "cpu", numbers: object = None) -> Potential:
    """Build the potential named by `spec`; relative paths are taken from `base_dir`."""
    prefix, _, argument = spec.partition(":")
    if prefix not in POTENTIALS:
        raise ConfigurationError(
            f"unknown potential {spec!r}; registered potentials:\n{describe_prefixes()}", source="potential")
    return _loader(prefix)(prefix, argument, Path(base_dir), device, numbers)
