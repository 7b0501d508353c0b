"""Initial conditions for molecular ensembles: Wigner sampling of harmonic modes, or geometries from a file (with,
optionally, each frame's initial state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exsnn.data.geometries import read_frame_info, read_structures
from exsnn.errors import ConfigurationError, DataError


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
        raise ConfigurationError(f"Wigner sampling needs positive vibrational frequencies, got {np.asarray(frequencies).tolist()} Hartree",
                                 where="harmonic modes")
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
    return read_structures(path)[0][0]


def from_file(path: str | Path, numbers: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometries (and velocities, when the file has them) from XYZ/extended XYZ (Angstrom unless the file declares
    `length_unit`) or an exsnn HDF5 dataset (Bohr; zero velocities). Every frame must match `numbers`."""
    path = Path(path)
    structures = read_structures(path)
    for k, (z, _, _) in enumerate(structures):
        if len(z) != len(numbers) or np.any(np.asarray(z) != numbers):
            raise DataError(path, f"frame {k}", f"atoms {[int(x) for x in z]} do not match the potential's {[int(x) for x in numbers]}")
    positions = np.array([p for _, p, _ in structures])
    velocities = np.array([v if v is not None else np.zeros_like(p) for _, p, v in structures])
    return torch.as_tensor(positions), torch.as_tensor(velocities)


def _state(value: object) -> int | None:
    """A frame's `initial_state` value as a state index (0 = S0; 'S2' or 2), None if it is not one."""
    from exsnn.dynamics.config import state_index

    if isinstance(value, np.integer):
        value = int(value)
    return state_index(value)


def frame_states(path: str | Path, count: int) -> list[int | None] | None:
    """The `initial_state` key of the first `count` frames of a structure file as state indices (None for a frame
    without it); None for an exsnn HDF5 dataset. DataError naming the file and frame for a value that is no state."""
    info = read_frame_info(path)
    if info is None:
        return None
    states: list[int | None] = []
    for k, frame in enumerate(info[:count]):
        if "initial_state" not in frame:
            states.append(None)
            continue
        state = _state(frame["initial_state"])
        if state is None:
            raise DataError(path, f"frame {k}: initial_state",
                            f"expected a state index (0 = S0) or 'S1', 'S2', ...; got {frame['initial_state']!r}")
        states.append(state)
    return states


def initial_states_from_file(path: str | Path, count: int, n_states: int) -> torch.Tensor:
    """(count,) long: the initial state of each of the first `count` frames, from the frame's `initial_state` key
    (extended XYZ comment line, e.g. `initial_state=2`). DataError naming the file and the frame when a frame lacks
    the key or names a state the potential (n_states) does not have."""
    states = frame_states(path, count)
    if states is None:
        raise DataError(path, "initial_state", "an exsnn HDF5 dataset carries no per-frame initial states; use an extended "
                        "XYZ file with initial_state=K on every frame (as exsnn excite writes), or one initial_state")
    for k, state in enumerate(states):
        if state is None:
            raise DataError(path, f"frame {k}: initial_state",
                            "missing (initial_state = 'file' needs the key on every frame, e.g. initial_state=2)")
        if state >= n_states:
            raise DataError(path, f"frame {k}: initial_state", f"S{state} does not exist: the potential has {n_states} states")
    return torch.tensor(states, dtype=torch.long)
