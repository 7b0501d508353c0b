"""Structure files of the photochemistry steps: extended XYZ in Angstrom with ASE velocities (what `exsnn dynamics`
reads with sampling = "file"), and reading any structure file exsnn reads (XYZ/extxyz, exsnn HDF5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exsnn.data.geometries import read_structures
from exsnn.errors import DataError
from exsnn.units import ANGSTROM_IN_BOHR, AU_TIME_IN_FS, BOHR_IN_ANGSTROM


def write_structures(path: str | Path, numbers: np.ndarray, positions: np.ndarray, velocities: np.ndarray | None = None,
                     info: dict[str, Any] | None = None, per_frame: list[dict[str, Any]] | None = None) -> Path:
    """Write S structures, positions (S, n, 3) Bohr and velocities (S, n, 3) Bohr per atomic time unit (or None), as
    extended XYZ (Angstrom; velocities as ASE momenta, which `exsnn.data.geometries.read_structures` converts back).
    `info` goes into every frame's comment line, `per_frame[k]` into frame k's."""
    import ase
    import ase.io
    from ase import units as ase_units

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    to_ase_velocity = 1.0 / (ANGSTROM_IN_BOHR * AU_TIME_IN_FS * ase_units.fs)
    for k in range(len(positions)):
        atoms = ase.Atoms(numbers=np.asarray(numbers), positions=np.asarray(positions[k]) * BOHR_IN_ANGSTROM)
        if velocities is not None:
            atoms.set_velocities(np.asarray(velocities[k]) * to_ase_velocity)
        atoms.info.update(info or {})
        if per_frame is not None:
            atoms.info.update(per_frame[k])
        atoms.info["length_unit"] = "Angstrom"
        images.append(atoms)
    ase.io.write(str(path), images, format="extxyz")
    return path


def read_geometries(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """numbers (n,), positions (S, n, 3) Bohr and velocities (S, n, 3) (None when no frame has them) of a structure
    file whose frames all hold the same atoms."""
    structures = read_structures(path)
    numbers = np.asarray(structures[0][0])
    for k, (z, _, _) in enumerate(structures):
        if len(z) != len(numbers) or np.any(np.asarray(z) != numbers):
            raise DataError(path, f"frame {k}", "holds other atoms than frame 0")
    positions = np.array([p for _, p, _ in structures])
    if all(v is None for _, _, v in structures):
        return numbers, positions, None
    velocities = np.array([v if v is not None else np.zeros_like(p) for _, p, v in structures])
    return numbers, positions, velocities
