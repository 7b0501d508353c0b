"""Initial conditions for molecular ensembles: Wigner sampling of harmonic modes, or geometries from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exsnn.data.errors import DataError
from exsnn.units import ANGSTROM_IN_BOHR, AU_TIME_IN_FS


def wigner_harmonic(
    reference: np.ndarray, masses: np.ndarray, frequencies: np.ndarray, modes: np.ndarray, n_samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the Wigner distribution of the harmonic vibrational ground state.

    reference (n, 3) Bohr, masses (n,) electron masses, frequencies (M,) Hartree (> 0, vibrations only),
    modes (3n, M) orthonormal mass-weighted normal modes. In each mode the mass-weighted coordinate q and momentum p
    are Gaussian with variances 1 / (2 w) and w / 2 (hbar = 1); Cartesian displacements and velocities are
    dx = M^-1/2 K q and v = M^-1/2 K p. Returns positions and velocities (n_samples, n, 3).
    """
    if np.any(frequencies <= 0):
        raise ValueError("Wigner sampling needs positive vibrational frequencies")
    rng = np.random.default_rng([seed, 0x316E])
    q = rng.normal(size=(n_samples, len(frequencies))) / np.sqrt(2 * frequencies)
    p = rng.normal(size=(n_samples, len(frequencies))) * np.sqrt(frequencies / 2)
    inverse_sqrt_mass = 1.0 / np.sqrt(np.repeat(masses, 3))
    dx = (q @ modes.T) * inverse_sqrt_mass
    v = (p @ modes.T) * inverse_sqrt_mass
    n = len(masses)
    positions = reference[None] + dx.reshape(n_samples, n, 3)
    return torch.as_tensor(positions), torch.as_tensor(v.reshape(n_samples, n, 3))


def read_numbers(path: str | Path) -> np.ndarray:
    """Atomic numbers of the first frame of an XYZ/extxyz or exsnn HDF5 file."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.suffix in (".h5", ".hdf5"):
        from exsnn.data.store import read_frames

        return read_frames(path, [0]).numbers.astype(np.int64)
    import ase.io

    try:
        return ase.io.read(str(path), index=0).numbers
    except Exception as exc:
        raise DataError(path, "file", f"unreadable geometry file ({type(exc).__name__}: {exc})") from None


def from_file(path: str | Path, numbers: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometries (and velocities, when the file has them) from XYZ/extended XYZ (Angstrom; ASE velocities in
    Angstrom/(ASE time)) or an exsnn HDF5 dataset (Bohr; zero velocities). Every frame must match `numbers`."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.suffix in (".h5", ".hdf5"):
        from exsnn.data.store import read_frames

        arrays = read_frames(path)
        frames = [arrays.frame(k) for k in range(arrays.n_frames)]
        positions = [f.positions for f in frames]
        velocities = [np.zeros_like(f.positions) for f in frames]
        found = [f.numbers for f in frames]
    else:
        import ase.io
        from ase import units as ase_units

        try:
            images = ase.io.read(str(path), index=":")
        except Exception as exc:
            raise DataError(path, "file", f"unreadable geometry file ({type(exc).__name__}: {exc})") from None
        positions = [a.positions * ANGSTROM_IN_BOHR for a in images]
        # ASE velocities are in Angstrom per ASE time unit (1 fs = ase.units.fs); atomic: Bohr per atomic time unit
        ase_velocity_to_au = ANGSTROM_IN_BOHR * AU_TIME_IN_FS * ase_units.fs
        velocities = [a.get_velocities() * ase_velocity_to_au if a.has("momenta") else np.zeros((len(a), 3)) for a in images]
        found = [a.numbers for a in images]
    for k, z in enumerate(found):
        if len(z) != len(numbers) or np.any(np.asarray(z) != numbers):
            raise DataError(path, f"frame {k}", f"atoms {[int(x) for x in z]} do not match the potential's {[int(x) for x in numbers]}")
    return torch.as_tensor(np.array(positions)), torch.as_tensor(np.array(velocities))
