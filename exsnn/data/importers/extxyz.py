"""Extended XYZ with per-state arrays (the exsnn convention, also written by `exsnn data export`).

Per frame (``info``): ``energies`` (N values), optional ``dipoles`` (Pd*3 values, pairs 00, 01, ...),
``charge``, ``multiplicity``, ``method``/``basis``/``program``/``program_version`` (read from the first
frame), and the units ``energy_unit`` (default eV) and ``length_unit`` (default Angstrom).
Per atom (``arrays``): ``state_forces`` (N*3 columns, energy_unit/length_unit) and ``nacs`` (P*3 columns,
1/length_unit). Positions are in length_unit; dipoles in e*length_unit. ``n_states`` in info is optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ase.io
import numpy as np

from exsnn.data.frame import Frame
from exsnn.data.importers.common import ImportedData
from exsnn.data.store import DatasetMetadata
from exsnn.errors import DataError
from exsnn.units import to_atomic

DEFAULT_ENERGY_UNIT = "eV"
DEFAULT_LENGTH_UNIT = "Angstrom"


def _read_all(source: Path) -> list[Any]:
    if not source.exists():
        raise DataError(source, "file", "does not exist")
    try:
        images = ase.io.read(str(source), index=":", format="extxyz")
    except KeyError as exc:  # ASE's lookup of an unknown chemical symbol
        raise DataError(source, "species", f"unknown element {exc}") from None
    except Exception as exc:  # ASE raises many types for malformed text
        raise DataError(source, "file", f"malformed extended XYZ ({type(exc).__name__}: {exc})") from None
    if not images:
        raise DataError(source, "file", "holds no frames")
    return images


def read_structures(source: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(numbers, positions in Bohr, velocities in Bohr/atomic time or None) of every frame of an XYZ/extended XYZ
    file; positions are in Angstrom unless the frame declares `length_unit`."""
    from ase import units as ase_units

    from exsnn.units import AU_TIME_IN_FS

    source = Path(source)
    structures = []
    for k, atoms in enumerate(_read_all(source)):
        try:
            to_bohr = to_atomic(str(atoms.info.get("length_unit", DEFAULT_LENGTH_UNIT)), "length")
        except ValueError as exc:
            raise DataError(source, f"frame {k}: units", str(exc)) from None
        # ASE velocities are Angstrom per ASE time unit (1 fs = ase.units.fs)
        velocities = (
            atoms.get_velocities() * (to_atomic("Angstrom", "length") * AU_TIME_IN_FS * ase_units.fs)
            if atoms.has("momenta")
            else None
        )
        structures.append((atoms.numbers, atoms.positions * to_bohr, velocities))
    return structures


def read_info(source: str | Path) -> list[dict[str, Any]]:
    """The comment-line keys (ASE `info`) of every frame of an XYZ/extended XYZ file."""
    return [dict(atoms.info) for atoms in _read_all(Path(source))]


def import_extxyz(source: str | Path) -> ImportedData:
    """Read an extended XYZ file with exsnn per-state arrays."""
    source = Path(source)
    frames: list[Frame] = []
    n_states: int | None = None
    images = _read_all(source)
    for k, atoms in enumerate(images):
        where = f"frame {k}"
        info, arrays = atoms.info, atoms.arrays
        try:
            energy_unit = str(info.get("energy_unit", DEFAULT_ENERGY_UNIT))
            length_unit = str(info.get("length_unit", DEFAULT_LENGTH_UNIT))
            to_bohr = to_atomic(length_unit, "length")
            to_hartree = to_atomic(energy_unit, "energy")
        except ValueError as exc:
            raise DataError(source, f"{where}: units", str(exc)) from None
        energies = None
        if "energies" in info:
            energies = np.atleast_1d(np.asarray(info["energies"], dtype=float)) * to_hartree
            if n_states is None:
                n_states = len(energies)
        if n_states is None and "n_states" in info:
            n_states = int(info["n_states"])
        if n_states is None:
            raise DataError(source, f"{where}: energies", "missing: the first frame must give energies or n_states")
        n = len(atoms)

        def per_atom(key: str, arrays: dict = arrays, where: str = where, n: int = n) -> np.ndarray | None:
            if key not in arrays:
                return None
            value = np.asarray(arrays[key], dtype=float)
            if value.ndim != 2 or value.shape[1] % 3:
                raise DataError(source, f"{where}: {key}", f"expected (atoms, 3*k) columns, got shape {value.shape}")
            return value.reshape(n, -1, 3)

        forces = per_atom("state_forces")
        nacs = per_atom("nacs")
        dipoles = None
        if "dipoles" in info:
            flat = np.atleast_1d(np.asarray(info["dipoles"], dtype=float))
            if flat.size % 3:
                raise DataError(source, f"{where}: dipoles", f"{flat.size} values is not a multiple of 3")
            dipoles = flat.reshape(-1, 3) * to_bohr
        frame = Frame(
            numbers=atoms.numbers,
            positions=atoms.positions * to_bohr,
            energies=energies,
            forces=None if forces is None else forces * (to_hartree / to_bohr),
            nacs=None if nacs is None else nacs / to_bohr,
            dipoles=dipoles,
            charge=int(info["charge"]) if "charge" in info else None,
            multiplicity=int(info["multiplicity"]) if "multiplicity" in info else None,
            provenance={"source": "import", "format": "extxyz", "file": str(source), "index": k},
        )
        frames.append(frame.validated(n_states, str(source), where))
    assert n_states is not None
    described = {key: str(images[0].info.get(key, "")) for key in ("method", "basis", "program", "program_version")}
    metadata = DatasetMetadata(
        n_states=n_states, extra={"imported_from": str(source), "source_format": "extxyz"}, **described
    )
    return ImportedData(metadata=metadata, frames=frames)
