"""Geometries (and velocities) from any structure file exsnn reads: XYZ/extended XYZ or an exsnn HDF5 dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exsnn.errors import DataError


def read_structures(path: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(numbers, positions in Bohr, velocities in Bohr/atomic time or None) per frame. XYZ positions are in
    Angstrom unless the frame declares `length_unit`; HDF5 datasets are in Bohr and carry no velocities."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.suffix in (".h5", ".hdf5"):
        from exsnn.data.store import read_frames

        structures = [(f.numbers.astype(np.int64), f.positions, None) for f in read_frames(path).frames()]
    else:
        from exsnn.data.importers.extxyz import read_structures as read_xyz

        structures = read_xyz(path)
    if not structures:
        raise DataError(path, "file", "holds no structures")
    for k, (_, positions, velocities) in enumerate(structures):
        if not np.all(np.isfinite(positions)):
            raise DataError(path, f"frame {k}: positions", "contain NaN or infinite values")
        if velocities is not None and not np.all(np.isfinite(velocities)):
            raise DataError(path, f"frame {k}: velocities", "contain NaN or infinite values")
    return structures


def read_frame_info(path: str | Path) -> list[dict[str, Any]] | None:
    """The comment-line keys of every frame of an XYZ/extended XYZ file; None for an exsnn HDF5 dataset, whose frames
    carry no such keys."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.suffix in (".h5", ".hdf5"):
        return None
    from exsnn.data.importers.extxyz import read_info

    return read_info(path)
