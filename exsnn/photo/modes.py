"""Harmonic modes of a molecule: from a Cartesian Hessian, from SHARC's V0.txt, and the modes file the steps share.

Harmonic analysis (Wilson, Decius and Cross, *Molecular Vibrations*, 1955; as in every quantum-chemistry code): the
Hessian is mass-weighted, H_m = M^-1/2 H M^-1/2, and diagonalised in the complement of the translations and the
infinitesimal rotations about the centre of mass (6 directions; 5 for a linear molecule, whose rotation about its
axis moves no atom). Eigenvalues k give frequencies w = sqrt(k) (Hartree, masses in electron masses); a negative k is
an imaginary mode, reported with a negative frequency.

Modes file (JSON; every array in atomic units, named with its unit)::

    {"format": "exsnn-harmonic-modes", "format_version": 1,
     "method": "RHF/sto-3g", "source": "how the modes were made", "energy_hartree": E or null,
     "numbers": [n], "positions_bohr": [[x, y, z]] * n, "masses_electron": [n],
     "frequencies_hartree": [M], "frequencies_cm1": [M] (for reading only),
     "modes_mass_weighted": [[M numbers]] * 3n   (orthonormal columns; rows: x, y, z of atom 1, then atom 2, ...),
     "linear": bool, "left_out": [{"frequency_cm1": f, "reason": "..."}]}

M counts the vibrations kept (3n - 6, or 3n - 5 for a linear molecule, less those left out: imaginary modes when
they are allowed). Cartesian displacement along mode k by normal coordinate q (sqrt(electron mass) Bohr):
dx = M^-1/2 K[:, k] q.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError, DataError, ElectronicStructureError

FORMAT_NAME = "exsnn-harmonic-modes"
FORMAT_VERSION = 1
#: 1 Hartree in cm^-1 (CODATA 2018: 2 R_inf / 100)
HARTREE_IN_CM1 = 219474.6313632
#: a molecule is linear when its smallest principal moment of inertia is below this fraction of the largest
LINEAR_INERTIA_RATIO = 1e-8


@dataclass
class HarmonicModes:
    """Vibrational modes at a reference geometry (n atoms, M modes kept), atomic units.

    numbers (n,), positions (n, 3) Bohr, masses (n,) electron masses, frequencies (M,) Hartree (> 0), modes (3n, M)
    orthonormal mass-weighted normal modes, linear: 5 rather than 6 external directions; left_out: modes not kept
    (imaginary when allowed) with their frequency in cm^-1 (negative: imaginary) and the reason."""

    numbers: np.ndarray
    positions: np.ndarray
    masses: np.ndarray
    frequencies: np.ndarray
    modes: np.ndarray
    method: str = ""
    source: str = ""
    energy: float | None = None
    linear: bool = False
    left_out: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def frequencies_cm1(self) -> np.ndarray:
        return self.frequencies * HARTREE_IN_CM1

    def cartesian_modes(self) -> np.ndarray:
        """(M, n, 3): displacement per unit normal coordinate, M^-1/2 K (Bohr / sqrt(electron mass))."""
        inverse_sqrt = 1.0 / np.sqrt(np.repeat(self.masses, 3))
        return (self.modes * inverse_sqrt[:, None]).T.reshape(len(self.frequencies), self.n_atoms, 3)

    def normal_coordinates(self, positions: np.ndarray, velocities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Mass-weighted normal coordinates q (S, M) of positions (S, n, 3) Bohr, and momenta p = dq/dt (S, M) of
        velocities (S, n, 3) (no alignment: for structures displaced from the reference without rotation)."""
        sqrt_mass = np.sqrt(np.repeat(self.masses, 3))
        displacement = (np.asarray(positions) - self.positions).reshape(len(positions), -1)
        q = (displacement * sqrt_mass) @ self.modes
        p = None if velocities is None else (np.asarray(velocities).reshape(len(velocities), -1) * sqrt_mass) @ self.modes
        return q, p

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "source": self.source,
            "energy_hartree": self.energy,
            "numbers": [int(z) for z in self.numbers],
            "positions_bohr": np.asarray(self.positions).tolist(),
            "masses_electron": np.asarray(self.masses).tolist(),
            "frequencies_hartree": np.asarray(self.frequencies).tolist(),
            "frequencies_cm1": np.round(self.frequencies_cm1, 4).tolist(),
            "modes_mass_weighted": np.asarray(self.modes).tolist(),
            "linear": bool(self.linear),
            "left_out": self.left_out,
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def read_modes(path: str | Path) -> HarmonicModes:
    """A modes file (JSON, see the module docstring), SHARC's V0.txt, or an LVC.template (its V0.txt)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.suffix.lower() == ".json":
        return _read_json(path)
    if path.name.lower().endswith(".template"):
        from exsnn.potentials.lvc import read_lvc_template

        return from_reference_modes(read_lvc_template(path).reference, source=f"LVC model {path}")
    from exsnn.potentials.lvc import read_v0

    return from_reference_modes(read_v0(path), source=f"SHARC V0.txt {path}")


def _read_json(path: Path) -> HarmonicModes:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, "file", f"invalid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise DataError(path, "format", f"not an exsnn modes file (expected format = {FORMAT_NAME!r})")
    try:
        numbers = np.asarray(data["numbers"], dtype=np.int64)
        n = len(numbers)
        arrays = {
            "positions_bohr": (np.asarray(data["positions_bohr"], dtype=float), (n, 3)),
            "masses_electron": (np.asarray(data["masses_electron"], dtype=float), (n,)),
        }
        frequencies = np.asarray(data["frequencies_hartree"], dtype=float)
        arrays["frequencies_hartree"] = (frequencies, (len(frequencies),))
        modes = np.asarray(data["modes_mass_weighted"], dtype=float).reshape(3 * n, len(frequencies))
    except KeyError as exc:
        raise DataError(path, str(exc.args[0]), "missing") from None
    except (TypeError, ValueError) as exc:
        raise DataError(path, "arrays", f"malformed ({exc})") from None
    for key, (array, shape) in arrays.items():
        if array.shape != shape:
            raise DataError(path, key, f"shape {array.shape}, expected {shape}")
        if not np.all(np.isfinite(array)):
            raise DataError(path, key, "contains NaN or infinite values")
    if np.any(frequencies <= 0):
        raise DataError(path, "frequencies_hartree", "must all be positive (imaginary modes are left out, see left_out)")
    return HarmonicModes(numbers, arrays["positions_bohr"][0], arrays["masses_electron"][0], frequencies, modes,
                         method=str(data.get("method", "")), source=str(data.get("source", "")),
                         energy=data.get("energy_hartree"), linear=bool(data.get("linear", False)),
                         left_out=list(data.get("left_out", [])))


def from_reference_modes(reference: Any, source: str = "") -> HarmonicModes:
    """HarmonicModes from an LVC model's ReferenceModes (V0.txt): the modes with positive frequency; masses with the
    factor SHARC's LVC definition uses (amu -> electron masses), so samples match `LVCPotential.masses`."""
    from exsnn.potentials.lvc import AMU_TO_ME

    vibrations = np.flatnonzero(reference.frequencies > 1e-8)
    masses = np.asarray(reference.masses) * AMU_TO_ME
    inertia = principal_moments(np.asarray(reference.positions), masses)
    return HarmonicModes(np.asarray(reference.numbers), np.asarray(reference.positions, dtype=float), masses,
                         np.asarray(reference.frequencies)[vibrations], np.asarray(reference.modes)[:, vibrations],
                         method="LVC reference (V0.txt)", source=source, linear=bool(inertia[0] < LINEAR_INERTIA_RATIO * inertia[-1]))


def principal_moments(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Principal moments of inertia (3,), ascending, about the centre of mass (electron mass Bohr^2)."""
    centred = positions - masses @ positions / masses.sum()
    inertia = np.einsum("i,ij,ik->jk", masses, centred, centred)
    return np.linalg.eigvalsh(np.trace(inertia) * np.eye(3) - inertia)


def external_directions(positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, bool]:
    """Orthonormal mass-weighted translations and infinitesimal rotations about the centre of mass (3n, 6), or
    (3n, 5) for a linear molecule, and whether it is linear. A single atom has 3."""
    n = len(masses)
    centred = positions - masses @ positions / masses.sum()
    sqrt_mass = np.sqrt(masses)
    vectors = []
    for axis in np.eye(3):
        vectors.append((sqrt_mass[:, None] * axis[None, :]).ravel())
    for axis in np.eye(3):
        vectors.append((sqrt_mass[:, None] * np.cross(axis, centred)).ravel())
    basis = np.array(vectors).T  # (3n, 6)
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    moments = principal_moments(positions, masses)
    linear = n == 2 or bool(moments[0] < LINEAR_INERTIA_RATIO * moments[-1])
    rank = 3 if n == 1 else (5 if linear else 6)
    return u[:, :rank], linear


def modes_from_hessian(numbers: np.ndarray, positions: np.ndarray, masses: np.ndarray, hessian: np.ndarray,
                       method: str = "", source: str = "", energy: float | None = None,
                       allow_imaginary: bool = False) -> HarmonicModes:
    """Harmonic analysis of a Cartesian Hessian (3n, 3n) in Hartree/Bohr^2 at positions (n, 3) Bohr with masses (n,)
    in electron masses. Imaginary modes raise ElectronicStructureError (the structure is not a minimum) unless
    allowed; allowed ones are left out of the modes and listed in `left_out`."""
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    masses = np.asarray(masses, dtype=float)
    n = len(numbers)
    hessian = np.asarray(hessian, dtype=float).reshape(3 * n, 3 * n)
    if not np.all(np.isfinite(hessian)):
        raise ElectronicStructureError("the Hessian contains NaN or infinite values", source=source or None)
    hessian = 0.5 * (hessian + hessian.T)
    inverse_sqrt = 1.0 / np.sqrt(np.repeat(masses, 3))
    weighted = hessian * inverse_sqrt[:, None] * inverse_sqrt[None, :]
    external, linear = external_directions(positions, masses)
    # orthonormal basis of the internal space: the complement of the external directions
    u, _, _ = np.linalg.svd(np.eye(3 * n) - external @ external.T)
    internal = u[:, : 3 * n - external.shape[1]]
    curvature, vectors = np.linalg.eigh(internal.T @ weighted @ internal)
    modes = internal @ vectors
    frequencies = np.sign(curvature) * np.sqrt(np.abs(curvature))
    imaginary = curvature < 0
    left_out = [{"frequency_cm1": float(w * HARTREE_IN_CM1), "reason": "imaginary"} for w in frequencies[imaginary]]
    if imaginary.any() and not allow_imaginary:
        listed = ", ".join(f"{abs(x['frequency_cm1']):.1f}i" for x in left_out)
        raise ElectronicStructureError(f"{int(imaginary.sum())} imaginary mode(s) ({listed} cm^-1): the structure is not a "
                                       "minimum; optimise it first, or allow imaginary modes to leave them out",
                                       source=source or None)
    keep = ~imaginary
    return HarmonicModes(numbers, positions, masses, frequencies[keep], modes[:, keep], method=method, source=source,
                         energy=energy, linear=linear, left_out=left_out)


def check_same_molecule(modes: HarmonicModes, numbers: np.ndarray, where: str) -> None:
    if len(numbers) != modes.n_atoms or np.any(np.asarray(numbers) != modes.numbers):
        raise ConfigurationError(f"atoms {[int(z) for z in numbers]} differ from the modes' {[int(z) for z in modes.numbers]}", where=where)
