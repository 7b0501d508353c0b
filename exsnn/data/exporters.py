"""Exporters from exsnn frames to formats other tools read: SPaiNN ASE databases and extended XYZ.

Both write what `exsnn.data.importers` reads back, so export followed by import reproduces the arrays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ase.db
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io.extxyz import key_val_dict_to_str

from exsnn.data.frame import FrameArrays
from exsnn.data.properties import state_pairs
from exsnn.data.store import DatasetMetadata
from exsnn.errors import ConfigurationError, DataError
from exsnn.units import ANGSTROM_IN_BOHR, EV_IN_HARTREE


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            raise DataError(path, "file", "already exists (pass --overwrite to replace it)")
        path.unlink()


def export_spainn_db(arrays: FrameArrays, metadata: DatasetMetadata, path: str | Path, overwrite: bool = False) -> None:
    """Write a SPaiNN / SchNetPack-2 ASE database (Bohr, Hartree, Hartree/Bohr, NACs and smooth NACs in a.u.).

    `smooth_nacs` follow SPaiNN's convention, (E_i - E_j) d_ij for pair i<j (Hartree/Bohr); exsnn's network predicts
    h_ij = (E_j - E_i) d_ij, the opposite sign (see exsnn.model.network). Labels absent from a frame are left out of
    its row.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    N = metadata.n_states
    pairs = np.array(state_pairs(N)).reshape(-1, 2)
    reference = "/".join(p for p in (metadata.method, metadata.basis) if p)
    if metadata.program:
        reference += f", program: {metadata.program}"
    with ase.db.connect(str(path), type="db") as db:
        for k in range(arrays.n_frames):
            frame = arrays.frame(k)
            data: dict[str, np.ndarray] = {}
            if frame.energies is not None:
                data["energy"] = frame.energies.reshape(1, N)
            if frame.forces is not None:
                data["forces"] = frame.forces
            if frame.nacs is not None:
                data["nacs"] = frame.nacs
                if frame.energies is not None and len(pairs):
                    gaps = frame.energies[pairs[:, 0]] - frame.energies[pairs[:, 1]]
                    data["smooth_nacs"] = frame.nacs * gaps[None, :, None]
            if frame.dipoles is not None:
                data["dipoles"] = frame.dipoles
            db.write(Atoms(numbers=frame.numbers, positions=frame.positions), data=data)
    db = ase.db.connect(str(path), type="db")
    db.metadata = {
        "n_singlets": N,
        "n_triplets": 0,
        "states": "S " * N,
        "phasecorrected": False,
        "ReferenceMethod": reference,
        "_distance_unit": "Bohr",
        "_property_unit_dict": {"energy": "Hartree", "forces": "Hartree/Bohr", "nacs": "1", "smooth_nacs": "1", "dipoles": "1"},
    }


EXTXYZ_UNITS = {"atomic": ("Bohr", "Hartree", 1.0, 1.0), "ase": ("Angstrom", "eV", ANGSTROM_IN_BOHR, EV_IN_HARTREE)}


def export_extxyz(
    arrays: FrameArrays, metadata: DatasetMetadata, path: str | Path, overwrite: bool = False, units: str = "atomic"
) -> None:
    """Write extended XYZ with per-state arrays (see `exsnn.data.importers.extxyz`).

    `units="atomic"` (default) writes Bohr/Hartree with full float precision, so re-import is exact;
    `units="ase"` writes Angstrom/eV for viewers (re-import then agrees to about 1e-15 relative).
    The units are declared in every frame's header, and the importer honours them.
    """
    path = Path(path)
    if units not in EXTXYZ_UNITS:
        raise ConfigurationError(f"must be one of {sorted(EXTXYZ_UNITS)}, got {units!r}", where="units")
    length_unit, energy_unit, bohr_per_length, hartree_per_energy = EXTXYZ_UNITS[units]
    _refuse_existing(path, overwrite)
    lines: list[str] = []
    for k in range(arrays.n_frames):
        frame = arrays.frame(k)
        n = frame.n_atoms
        columns: list[tuple[str, np.ndarray]] = [("pos", frame.positions / bohr_per_length)]
        if frame.forces is not None:
            columns.append(("state_forces", (frame.forces * (bohr_per_length / hartree_per_energy)).reshape(n, -1)))
        if frame.nacs is not None:
            columns.append(("nacs", (frame.nacs * bohr_per_length).reshape(n, -1)))
        info: dict[str, object] = {"n_states": metadata.n_states, "energy_unit": energy_unit, "length_unit": length_unit}
        info.update({key: value for key, value in _method_fields(metadata).items() if value})
        if frame.energies is not None:
            info["energies"] = frame.energies / hartree_per_energy
        if frame.dipoles is not None:
            info["dipoles"] = (frame.dipoles / bohr_per_length).reshape(-1)
        if frame.charge is not None:
            info["charge"] = frame.charge
        if frame.multiplicity is not None:
            info["multiplicity"] = frame.multiplicity
        properties = "species:S:1:" + ":".join(f"{name}:R:{values.shape[1]}" for name, values in columns)
        lines.append(str(n))
        lines.append(f"Properties={properties} {key_val_dict_to_str(info)}")
        table = np.concatenate([values for _, values in columns], axis=1)
        for symbol, row in zip((chemical_symbols[z] for z in frame.numbers), table):
            lines.append(" ".join([f"{symbol:<2}", *(repr(float(x)) for x in row)]))
    path.write_text("\n".join(lines) + "\n")


def _method_fields(metadata: DatasetMetadata) -> dict[str, str]:
    return {"method": metadata.method, "basis": metadata.basis, "program": metadata.program, "program_version": metadata.program_version}


EXPORTERS: dict[str, Callable[..., None]] = {"spainn-db": export_spainn_db, "extxyz": export_extxyz}


def export_format_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".db":
        return "spainn-db"
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    raise DataError(path, "format", f"cannot tell the export format from the name; pass one of {sorted(EXPORTERS)}")
