"""Physical constants and unit conversions.

Everything inside exsnn is in atomic units (Hartree, Bohr, Hartree/Bohr, 1/Bohr, e*Bohr, atomic time,
electron masses). Convert only at the edges with the factors below, which derive from ASE's CODATA values.
"""

from __future__ import annotations

from ase import units as _ase_units

from exsnn.errors import ConfigurationError

BOHR_IN_ANGSTROM: float = _ase_units.Bohr
ANGSTROM_IN_BOHR: float = 1.0 / BOHR_IN_ANGSTROM
HARTREE_IN_EV: float = _ase_units.Hartree
EV_IN_HARTREE: float = 1.0 / HARTREE_IN_EV
AU_TIME_IN_FS: float = _ase_units._aut * 1e15
FS_IN_AU_TIME: float = 1.0 / AU_TIME_IN_FS
AMU_IN_ELECTRON_MASS: float = _ase_units._amu / _ase_units._me
DEBYE_IN_E_BOHR: float = _ase_units.Debye / _ase_units.Bohr

_LENGTH_IN_BOHR = {"bohr": 1.0, "au": 1.0, "a.u.": 1.0, "angstrom": ANGSTROM_IN_BOHR, "ang": ANGSTROM_IN_BOHR, "a": ANGSTROM_IN_BOHR}
_ENERGY_IN_HARTREE = {"hartree": 1.0, "ha": 1.0, "au": 1.0, "a.u.": 1.0, "ev": EV_IN_HARTREE}


def length_in_bohr(unit: str) -> float:
    """Factor that converts a length given in `unit` (Bohr or Angstrom) to Bohr."""
    try:
        return _LENGTH_IN_BOHR[unit.strip().lower()]
    except KeyError:
        raise ConfigurationError(f"unknown length unit {unit!r}; expected one of Bohr, Angstrom") from None


def energy_in_hartree(unit: str) -> float:
    """Factor that converts an energy given in `unit` (Hartree or eV) to Hartree."""
    try:
        return _ENERGY_IN_HARTREE[unit.strip().lower()]
    except KeyError:
        raise ConfigurationError(f"unknown energy unit {unit!r}; expected one of Hartree, eV") from None


# Dimensions as exponents of (energy, length, charge); values in ASE units (eV, Angstrom, e).
_UNIT_TOKENS: dict[str, tuple[float, tuple[int, int, int]]] = {
    "hartree": (_ase_units.Hartree, (1, 0, 0)),
    "ha": (_ase_units.Hartree, (1, 0, 0)),
    "ev": (1.0, (1, 0, 0)),
    "kcal/mol": (_ase_units.kcal / _ase_units.mol, (1, 0, 0)),
    "bohr": (_ase_units.Bohr, (0, 1, 0)),
    "angstrom": (1.0, (0, 1, 0)),
    "ang": (1.0, (0, 1, 0)),
    "a": (1.0, (0, 1, 0)),
    "e": (1.0, (0, 0, 1)),
    "debye": (_ase_units.Debye, (0, 1, 1)),
    "1": (1.0, (0, 0, 0)),
}
_QUANTITIES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "energy": ("Hartree", (1, 0, 0)),
    "length": ("Bohr", (0, 1, 0)),
    "force": ("Hartree/Bohr", (1, -1, 0)),
    "nac": ("1/Bohr", (0, -1, 0)),
    "dipole": ("e*Bohr", (0, 1, 1)),
}


def _parse_unit(unit: str) -> tuple[float, tuple[int, int, int]]:
    """Value (in ASE units) and dimension of a unit string such as 'eV/Ang', 'Hartree/Bohr', 'e*Bohr', '1/Bohr'."""
    text = unit.strip().lower().replace(" ", "").replace("kcal/mol", "kcalmol")
    numerator, _, denominator = text.partition("/")
    value, dims = 1.0, [0, 0, 0]
    for part, sign in ((numerator, 1), (denominator, -1)):
        if not part:
            continue
        for token in part.split("*"):
            key = "kcal/mol" if token == "kcalmol" else token
            if key not in _UNIT_TOKENS:
                raise ConfigurationError(f"unknown unit {unit!r}")
            v, d = _UNIT_TOKENS[key]
            value *= v**sign
            dims = [a + sign * b for a, b in zip(dims, d)]
    return value, (dims[0], dims[1], dims[2])


def to_atomic(unit: str, quantity: str) -> float:
    """Factor converting `quantity` ('energy', 'length', 'force', 'nac', 'dipole') from `unit` to atomic units.

    Raises ValueError when the unit is unknown or has the wrong dimension for the quantity.
    """
    atomic_name, want = _QUANTITIES[quantity]
    value, dims = _parse_unit(unit)
    if dims != want:
        raise ConfigurationError(f"unit {unit!r} is not a unit of {quantity} (expected something like {atomic_name})")
    atomic_value, _ = _parse_unit(atomic_name)
    return value / atomic_value
