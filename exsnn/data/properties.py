"""The property vocabulary of exsnn datasets: label names, their units, state-pair ordering.

Pairs of states i<j are ordered 01, 02, ..., 0(N-1), 12, ... (upper triangle without the diagonal);
dipole pairs include the diagonal: 00, 01, ..., 11, 12, ... (permanent dipoles on the diagonal).
"""

from __future__ import annotations

from functools import cache

import numpy as np

POSITIONS = "positions"
ENERGIES = "energies"
FORCES = "forces"
NACS = "nacs"
DIPOLES = "dipoles"
CHARGE = "charge"
MULTIPLICITY = "multiplicity"

#: Labels that a frame may or may not carry; each has a mask in the dataset.
LABELS: tuple[str, ...] = (ENERGIES, FORCES, NACS, DIPOLES)
#: Optional per-frame integers (total charge, spin multiplicity); masked like labels.
FRAME_INTEGERS: tuple[str, ...] = (CHARGE, MULTIPLICITY)

UNITS: dict[str, str] = {
    POSITIONS: "Bohr",
    ENERGIES: "Hartree",
    FORCES: "Hartree/Bohr",
    NACS: "1/Bohr",
    DIPOLES: "e*Bohr",
    CHARGE: "e",
    MULTIPLICITY: "1",
}


def n_pairs(n_states: int) -> int:
    """Number of state pairs i<j."""
    return n_states * (n_states - 1) // 2


def n_dipole_pairs(n_states: int) -> int:
    """Number of state pairs i<=j (upper triangle including the diagonal)."""
    return n_states * (n_states + 1) // 2


@cache
def state_pairs(n_states: int) -> tuple[tuple[int, int], ...]:
    """The pairs (i, j), i<j, in exsnn order."""
    return tuple((i, j) for i in range(n_states) for j in range(i + 1, n_states))


@cache
def dipole_pairs(n_states: int) -> tuple[tuple[int, int], ...]:
    """The pairs (i, j), i<=j, in exsnn order."""
    return tuple((i, j) for i in range(n_states) for j in range(i, n_states))


def n_states_from_pairs(count: int, include_diagonal: bool) -> int:
    """Invert n_pairs / n_dipole_pairs; raises ValueError when `count` is not a triangular number."""
    for n in range(1, 1000):
        have = n_dipole_pairs(n) if include_diagonal else n_pairs(n)
        if have == count:
            return n
        if have > count:
            break
    raise ValueError(f"{count} is not a valid number of state pairs")


def pair_matrix_to_upper(matrix: np.ndarray, include_diagonal: bool) -> np.ndarray:
    """Take the (N, N, ...) matrix of pair quantities to the (pairs, ...) upper-triangle layout."""
    n = matrix.shape[0]
    pairs = dipole_pairs(n) if include_diagonal else state_pairs(n)
    rows = np.array([p[0] for p in pairs], dtype=int)
    cols = np.array([p[1] for p in pairs], dtype=int)
    return matrix[rows, cols]


def default_state_labels(n_states: int) -> list[str]:
    """S0, S1, ... for singlet-only data."""
    return [f"S{i}" for i in range(n_states)]
