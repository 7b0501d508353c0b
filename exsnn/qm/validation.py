"""Check QM settings and geometries before any calculation runs or any file is written.

Cheap: a PySCF Mole is built (basis functions, electron count), no SCF. What is checked, each failure naming the
option or the file and field:

* the functional (PySCF/libxc name) and the basis set (known, and defined for every element);
* the charge: a closed-shell singlet needs a positive, even number of electrons;
* the number of states: at least 2 for labelling, and no more than the method can give (singlet excitations of
  TDA/TDDFT, singlet configurations of the CAS);
* the SA-CASSCF active space: electrons and orbitals that the molecule and the basis have, cas_orbitals within the
  basis, AVAS labels that match atomic orbitals of the molecule;
* the coordinates: the right shapes, known elements, finite, no two atoms closer than half the sum of their covalent
  radii (the threshold of `exsnn data info`'s short_distance check).

Option names in the messages default to those of `exsnn label` (--method, --charge, --states); callers with other
spellings (a `pyscf:` potential spec) pass their own through `options`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from math import comb
from os import PathLike
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError, DataError
from exsnn.qm.settings import QMSettings
from exsnn.units import ANGSTROM_IN_BOHR

OVERLAP_FACTOR = 0.5  # atoms closer than this times the sum of their covalent radii overlap
LABEL_OPTIONS: dict[str, str] = {"method": "--method", "charge": "--charge", "states": "--states"}


def singlet_configurations(ncas: int, nelecas: int) -> int:
    """Number of singlet configuration state functions of nelecas electrons in ncas orbitals (Weyl's formula)."""
    if nelecas % 2 or nelecas > 2 * ncas:
        return 0
    half = nelecas // 2
    return comb(ncas + 1, half) * comb(ncas + 1, half + 1) // (ncas + 1)


def check_geometry(numbers: np.ndarray, positions: np.ndarray, source: str | PathLike[str], frame: int | None = None) -> None:
    """DataError(source, field, problem) unless numbers (n,) are known elements and positions (n, 3) Bohr are finite
    and free of overlapping atoms. frame: the structure's index in the file, named in the message."""
    from ase.data import chemical_symbols, covalent_radii

    where = "" if frame is None else f"frame {frame}: "
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    if numbers.ndim != 1 or len(numbers) == 0:
        raise DataError(source, f"{where}numbers", f"expected a non-empty list of atomic numbers, got shape {numbers.shape}")
    if positions.shape != (len(numbers), 3):
        raise DataError(source, f"{where}positions", f"expected shape ({len(numbers)}, 3), got {positions.shape}")
    unknown = [int(z) for z in numbers if not 1 <= int(z) < len(chemical_symbols)]
    if unknown:
        raise DataError(source, f"{where}numbers", f"unknown atomic numbers {unknown}")
    symbols = [chemical_symbols[int(z)] for z in numbers]
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        atoms = ", ".join(f"{k} ({symbols[k]})" for k in bad[:5])
        raise DataError(source, f"{where}positions", f"non-finite coordinates of atom(s) {atoms}")
    if len(numbers) < 2:
        return
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    radii = covalent_radii[numbers] * ANGSTROM_IN_BOHR
    limit = OVERLAP_FACTOR * (radii[:, None] + radii[None])
    ratio = distances / limit
    np.fill_diagonal(ratio, np.inf)
    i, j = sorted(np.unravel_index(np.argmin(ratio), ratio.shape))
    if ratio[i, j] < 1.0:
        raise DataError(source, f"{where}positions",
                        f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are {distances[i, j]:.3f} Bohr apart (overlapping: "
                        f"below {limit[i, j]:.3f} Bohr = {OVERLAP_FACTOR} x their covalent radii; coordinates in the wrong unit?)")


def _functional(settings: QMSettings, option: str) -> None:
    if settings.excited == "casscf" or settings.xc == "hf":
        return
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(settings.xc)
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(f"unknown exchange-correlation functional {settings.xc!r} ({exc}); use a PySCF/libxc "
                                 "name such as b3lyp, pbe0, camb3lyp, wb97x, or hf", source=option, where="functional") from None


def _molecule(settings: QMSettings, numbers: np.ndarray, positions: np.ndarray, options: Mapping[str, str]) -> Any:
    from pyscf import gto
    from pyscf.lib.exceptions import BasisNotFoundError

    electrons = int(np.sum(numbers)) - settings.charge
    if electrons <= 0:
        raise ConfigurationError(f"charge {settings.charge:+d} leaves {electrons} electrons (the nuclei carry "
                                 f"{int(np.sum(numbers))})", source=options["charge"])
    if electrons % 2:
        raise ConfigurationError(f"charge {settings.charge:+d} gives {electrons} electrons, an odd number: the states are "
                                 "singlets of a closed-shell molecule, so the charge must make the electron count even",
                                 source=options["charge"])
    try:
        with warnings.catch_warnings():  # PySCF's hint to install basis-set-exchange; the error below says enough
            warnings.simplefilter("ignore", UserWarning)
            return gto.M(atom=[(int(z), tuple(map(float, r))) for z, r in zip(numbers, positions)], unit="Bohr",
                         basis=settings.basis, charge=settings.charge, spin=0, verbose=0)
    except (BasisNotFoundError, KeyError) as exc:
        raise ConfigurationError(f"basis set {settings.basis!r}: {exc}", source=options["method"], where="basis") from None
    except RuntimeError as exc:
        raise ConfigurationError(f"cannot build the molecule with basis {settings.basis!r}: {exc}", source=options["method"],
                                 where="basis") from None


def _states(settings: QMSettings, mol: Any, min_states: int, options: Mapping[str, str]) -> None:
    N = settings.n_states
    if N < min_states:
        raise ConfigurationError(f"{N} state(s) asked; labelling needs at least {min_states} (S0 and an excited state)",
                                 source=options["states"])
    if settings.excited == "casscf":
        available = singlet_configurations(settings.ncas, settings.nelecas)
        if N > available:
            raise ConfigurationError(f"{N} states asked, but casscf({settings.nelecas},{settings.ncas}) has only {available} "
                                     "singlet configurations", source=options["states"])
        return
    n_occ = mol.nelectron // 2
    available = n_occ * (mol.nao - n_occ)
    if N - 1 > available:
        raise ConfigurationError(f"{N - 1} excited states asked, but {settings.basis} has only {available} singlet "
                                 f"excitations for this molecule ({n_occ} occupied x {mol.nao - n_occ} virtual orbitals)",
                                 source=options["states"])


def _active_space(settings: QMSettings, mol: Any, options: Mapping[str, str]) -> None:
    if settings.excited != "casscf":
        return
    option, cas = options["method"], f"casscf({settings.nelecas},{settings.ncas})"
    if settings.nelecas > mol.nelectron:
        raise ConfigurationError(f"{cas}: {settings.nelecas} active electrons, but the molecule has {mol.nelectron} "
                                 f"(charge {settings.charge:+d})", source=option, where="active space")
    core = (mol.nelectron - settings.nelecas) // 2
    if core + settings.ncas > mol.nao:
        raise ConfigurationError(f"{cas}: {core} core + {settings.ncas} active orbitals, but {settings.basis} has only "
                                 f"{mol.nao} basis functions for this molecule", source=option, where="active space")
    n_occ = mol.nelectron // 2
    if settings.ncas - settings.nelecas // 2 > mol.nao - n_occ:
        raise ConfigurationError(f"{cas}: {settings.ncas - settings.nelecas // 2} active virtual orbitals, but "
                                 f"{settings.basis} has only {mol.nao - n_occ}", source=option, where="active space")
    if settings.cas_orbitals and max(settings.cas_orbitals) > mol.nao:
        raise ConfigurationError(f"cas_orbitals up to {max(settings.cas_orbitals)}, but {settings.basis} has only {mol.nao} "
                                 "orbitals for this molecule (indices are 1-based)", source=option, where="cas_orbitals")
    if settings.avas:
        reference = mol.copy()
        reference.basis = "minao"
        reference.build(False, False)
        matched = reference.search_ao_label(list(settings.avas))
        if len(matched) == 0:
            raise ConfigurationError(f"no atomic orbital of the molecule matches {';'.join(settings.avas)} (labels look like "
                                     f"'C 2p', 'N 2pz', 'H 1s')", source=option, where="avas")
        needed = max(settings.nelecas // 2, settings.ncas - settings.nelecas // 2)
        if len(matched) < needed:
            raise ConfigurationError(f"{';'.join(settings.avas)} match {len(matched)} atomic orbitals, too few to choose "
                                     f"{settings.nelecas // 2} occupied and {settings.ncas - settings.nelecas // 2} virtual "
                                     f"active orbitals for {cas}", source=option, where="avas")


def check_method(settings: QMSettings, numbers: np.ndarray, positions: np.ndarray, min_states: int = 2,
                 options: Mapping[str, str] = LABEL_OPTIONS) -> None:
    """ConfigurationError unless the settings can run for this molecule (positions (n, 3) Bohr, already checked by
    `check_geometry`): functional, basis, charge, number of states (at least min_states), active space."""
    options = {**LABEL_OPTIONS, **options}
    _functional(settings, options["method"])
    mol = _molecule(settings, np.asarray(numbers), np.asarray(positions, dtype=float), options)
    _active_space(settings, mol, options)
    _states(settings, mol, min_states, options)


def check_settings(settings: QMSettings, numbers: np.ndarray, positions: np.ndarray, source: str | PathLike[str],
                   frame: int | None = None, min_states: int = 2, options: Mapping[str, str] = LABEL_OPTIONS) -> None:
    """Everything above for one structure: DataError naming `source` (the geometry file) for bad coordinates,
    ConfigurationError naming the option for impossible settings. Raises before any work is done; costs a PySCF
    Mole (milliseconds). For a file of many structures of the same molecule, call `check_geometry` for each and
    `check_method` once."""
    check_geometry(numbers, positions, source, frame)
    check_method(settings, numbers, positions, min_states, options)
