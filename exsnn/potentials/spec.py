"""Potential specifications as the command line writes them: `tully1`, `lvc:PATH/TO/LVC.template`, ...

Higher layers add their own prefixes (`model:`, `pyscf:`) with `register_potential`; this module knows only the
analytic ones, so nothing here imports the network or the quantum chemistry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from exsnn.potentials.base import Potential

Loader = Callable[..., Potential]  # (argument, base_dir, device, numbers=None) -> Potential
_LOADERS: dict[str, Loader] = {}


def register_potential(prefix: str, loader: Loader) -> None:
    """Make `prefix:ARGUMENT` specs load with `loader(argument, base_dir, device, numbers=...)`."""
    _LOADERS[prefix] = loader


def _resolve(argument: str, base_dir: Path) -> Path:
    path = Path(argument).expanduser()
    return path if path.is_absolute() else base_dir / path


def _tully(name: str) -> Loader:
    def load(argument: str, base_dir: Path, device: str, numbers: object = None) -> Potential:
        from exsnn.potentials.tully import TullyPotential

        return TullyPotential(name, device=device)

    return load


def _lvc(argument: str, base_dir: Path, device: str, numbers: object = None) -> Potential:
    from exsnn.potentials.lvc import LVCPotential

    return LVCPotential(_resolve(argument, base_dir), device=device)


for _name in ("tully1", "tully2", "tully3"):
    register_potential(_name, _tully(_name))
register_potential("lvc", _lvc)


def known_prefixes() -> list[str]:
    return sorted(_LOADERS)


def load_potential(spec: str, base_dir: str | Path = ".", device: str = "cpu", numbers: object = None) -> Potential:
    """Build the potential named by `spec`; relative paths are taken from `base_dir`. `numbers` (atomic numbers)
    is needed by potentials that do not fix the molecule themselves (trained models)."""
    prefix, _, argument = spec.partition(":")
    if prefix not in _LOADERS:
        raise ValueError(f"unknown potential {spec!r}; expected one of {', '.join(known_prefixes())} (as PREFIX or PREFIX:ARGUMENT)")
    return _LOADERS[prefix](argument, Path(base_dir), device, numbers=numbers)
