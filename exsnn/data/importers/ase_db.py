"""SPaiNN / SchNetPack-2 and SchNarc ASE databases (SQLite), in all three encodings found in the wild.

Layouts (N states, n atoms, P = N(N-1)/2, Pd = N(N+1)/2), all singlets:

* ``spainn``: SchNetPack-2 ``ASEAtomsData``; metadata ``_distance_unit`` and ``_property_unit_dict``;
  per row ``energy`` (1, N), ``forces`` (n, N, 3), ``nacs`` (n, P, 3), ``dipoles`` (Pd, 3).
* ``schnarc``: ``energy`` (N,), ``forces`` and ``nacs`` state-major: (N, n, 3) and (P, n, 3); ``dipoles`` (Pd, 3).
  Positions and labels in atomic units.
* the oldest SchNarc encoding: as ``schnarc`` but each array is a base64 string with ``_shape_<key>`` and
  ``_dtype_<key>`` entries beside it (decoded transparently).

SPaiNN writes the NAC unit as "1"; it is read as atomic units (1/Bohr).
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ase.db
import numpy as np

from exsnn.data.frame import Frame
from exsnn.data.importers.common import ImportedData, parse_reference_method
from exsnn.data.properties import n_pairs
from exsnn.data.store import DatasetMetadata
from exsnn.errors import DataError
from exsnn.units import to_atomic

LAYOUTS = ("spainn", "schnarc")
_PROPERTY_QUANTITY = {"energy": "energy", "forces": "force", "nacs": "nac", "dipoles": "dipole"}


def _decode_legacy(data: dict[str, Any], source: Path, where: str) -> dict[str, Any]:
    """Decode base64 arrays of the oldest SchNarc encoding; leave real arrays untouched."""
    decoded: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith(("_shape_", "_dtype_")):
            continue
        if isinstance(value, str) and f"_shape_{key}" in data:
            try:
                raw = base64.b64decode(value, validate=True)
                array = np.frombuffer(raw, dtype=np.dtype(data.get(f"_dtype_{key}", "float64")))
                decoded[key] = array.reshape(data[f"_shape_{key}"])
            except (binascii.Error, ValueError, TypeError) as exc:
                raise DataError(source, f"{where}: {key}", f"cannot decode base64 array ({exc})") from None
        else:
            decoded[key] = value
    return decoded


def _rows(source: Path) -> Iterator[Any]:
    try:
        db = ase.db.connect(str(source), type="db", create_indices=False)
        yield from db.select()
    except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
        raise DataError(source, "database", f"unreadable ASE database ({type(exc).__name__}: {exc})") from None


def _read_db_metadata(source: Path) -> dict[str, Any]:
    if not source.exists():
        raise DataError(source, "file", "does not exist")
    try:
        with open(source, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\x00":
            raise DataError(source, "file", "not an SQLite/ASE database (bad header)")
        return dict(ase.db.connect(str(source), type="db", create_indices=False).metadata)
    except sqlite3.DatabaseError as exc:
        raise DataError(source, "database", f"unreadable ASE database ({exc})") from None


def detect_layout(metadata: dict[str, Any]) -> str:
    """'spainn' when SchNetPack-2 unit metadata is present, otherwise 'schnarc'."""
    return "spainn" if "_distance_unit" in metadata or "_property_unit_dict" in metadata else "schnarc"


def _states_from_metadata(source: Path, metadata: dict[str, Any]) -> int | None:
    n_triplets = int(metadata.get("n_triplets", 0) or 0)
    if n_triplets:
        raise DataError(source, "metadata: n_triplets", f"{n_triplets} triplet states; exsnn supports singlet-only data")
    n_singlets = metadata.get("n_singlets")
    return int(n_singlets) if n_singlets is not None else None


def import_ase_db(source: str | Path, layout: str = "auto", distance_unit: str | None = None) -> ImportedData:
    """Read a SPaiNN or SchNarc database into exsnn frames (atomic units, exsnn array layout)."""
    source = Path(source)
    db_meta = _read_db_metadata(source)
    if layout == "auto":
        layout = detect_layout(db_meta)
    if layout not in LAYOUTS:
        raise DataError(source, "layout", f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    n_states = _states_from_metadata(source, db_meta)

    unit_dict = db_meta.get("_property_unit_dict", {}) if layout == "spainn" else {}
    try:
        length_unit = distance_unit or db_meta.get("_distance_unit", "Bohr")
        position_factor = to_atomic(length_unit, "length")
        factors = {
            key: (1.0 if unit_dict.get(key, "1") == "1" else to_atomic(unit_dict[key], quantity))
            for key, quantity in _PROPERTY_QUANTITY.items()
        }
    except ValueError as exc:
        raise DataError(source, "metadata: units", str(exc)) from None

    frames: list[Frame] = []
    for row in _rows(source):
        where = f"row {row.id}"
        data = _decode_legacy(dict(row.data), source, where)
        if "energy" not in data:
            raise DataError(source, f"{where}: energy", "missing (every row needs energies)")
        energies = np.asarray(data["energy"], dtype=float).reshape(-1)
        if n_states is None:
            n_states = len(energies)
        if len(energies) != n_states:
            raise DataError(source, f"{where}: energy", f"expected {n_states} states, got shape {np.shape(data['energy'])}")
        n_atoms = int(row.natoms)

        def array(key: str, state_major_shape: tuple[int, ...], data: dict = data, where: str = where) -> np.ndarray | None:
            if key not in data:
                return None
            value = np.asarray(data[key], dtype=float) * factors[key]
            if layout == "schnarc":
                if value.shape != state_major_shape:
                    raise DataError(source, f"{where}: {key}", f"expected shape {state_major_shape}, got {value.shape}")
                return value.transpose(1, 0, 2)
            return value

        frame = Frame(
            numbers=row.numbers,
            positions=np.asarray(row.positions, dtype=float) * position_factor,
            energies=energies * factors["energy"],
            forces=array("forces", (n_states, n_atoms, 3)),
            nacs=array("nacs", (n_pairs(n_states), n_atoms, 3)),
            dipoles=None if "dipoles" not in data else np.asarray(data["dipoles"], dtype=float) * factors["dipoles"],
            multiplicity=1,
            provenance={"source": "import", "format": f"{layout}-db", "file": str(source), "row_id": int(row.id)},
        )
        frames.append(frame.validated(n_states, str(source), where))
    if n_states is None:
        raise DataError(source, "database", "holds no rows and no n_singlets metadata")
    method, basis, program = parse_reference_method(str(db_meta.get("ReferenceMethod", "")))
    metadata = DatasetMetadata(
        n_states=n_states,
        method=method,
        basis=basis,
        program=program,
        extra={"imported_from": str(source), "source_format": f"{layout}-db", "source_metadata": _jsonable(db_meta)},
    )

    return ImportedData(metadata=metadata, frames=frames)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value
