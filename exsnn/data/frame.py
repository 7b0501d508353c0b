"""One labelled structure (`Frame`) and many of them in columnar, ragged form (`FrameArrays`).

Units are atomic throughout: positions in Bohr, energies in Hartree, forces in Hartree/Bohr, NACs in 1/Bohr,
dipoles in e*Bohr. Shapes (n = atoms of the frame, N = states, P = N(N-1)/2, Pd = N(N+1)/2):
numbers (n,), positions (n, 3), energies (N,), forces (n, N, 3), nacs (n, P, 3), dipoles (Pd, 3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from exsnn.data.properties import (
    CHARGE,
    DIPOLES,
    ENERGIES,
    FORCES,
    LABELS,
    MULTIPLICITY,
    NACS,
    n_dipole_pairs,
    n_pairs,
)
from exsnn.errors import DataError

MAX_ATOMIC_NUMBER = len(chemical_symbols) - 1


@dataclass
class Frame:
    """One structure with its (optional) excited-state labels. Absent labels are None."""

    numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray | None = None
    forces: np.ndarray | None = None
    nacs: np.ndarray | None = None
    dipoles: np.ndarray | None = None
    charge: int | None = None
    multiplicity: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    def label_shape(self, label: str, n_states: int) -> tuple[int, ...]:
        """The shape `label` must have in this frame."""
        n = self.n_atoms
        return {
            ENERGIES: (n_states,),
            FORCES: (n, n_states, 3),
            NACS: (n, n_pairs(n_states), 3),
            DIPOLES: (n_dipole_pairs(n_states), 3),
        }[label]

    def validated(self, n_states: int, source: str, where: str) -> Frame:
        """Return a copy with canonical dtypes; raise DataError naming `source` and `where` on any defect."""
        numbers = np.asarray(self.numbers)
        if numbers.ndim != 1 or numbers.size == 0:
            raise DataError(source, f"{where}: numbers", f"expected a non-empty 1-D array, got shape {numbers.shape}")
        if not np.issubdtype(numbers.dtype, np.integer):
            if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
                raise DataError(source, f"{where}: numbers", "atomic numbers must be integers")
            numbers = numbers.astype(np.int64)
        bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
        if np.any(bad):
            raise DataError(source, f"{where}: numbers", f"unknown element with atomic number {int(numbers[bad][0])}")
        n = len(numbers)
        positions = _checked_array(self.positions, (n, 3), source, f"{where}: positions")
        checked: dict[str, np.ndarray | None] = {}
        for label in LABELS:
            value = getattr(self, label)
            checked[label] = (
                None if value is None else _checked_array(value, self.label_shape(label, n_states), source, f"{where}: {label}")
            )
        return Frame(
            numbers=numbers.astype(np.int16),
            positions=positions,
            charge=None if self.charge is None else int(self.charge),
            multiplicity=None if self.multiplicity is None else int(self.multiplicity),
            provenance=dict(self.provenance),
            **checked,
        )


def _checked_array(value: Any, shape: tuple[int, ...], source: str, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(source, where, f"not a numeric array ({exc})") from None
    if array.shape != shape:
        raise DataError(source, where, f"expected shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(source, where, "contains NaN or infinite values")
    return array


@dataclass
class FrameArrays:
    """Many frames in columnar, ragged form: per-atom arrays are concatenated, `atom_offsets` (F+1,) delimits them.

    Absent labels hold NaN and have False in `masks[label]`; absent charge/multiplicity hold 0 with a False mask.
    `provenance` holds one JSON string per frame.
    """

    n_states: int
    atom_offsets: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    nacs: np.ndarray
    dipoles: np.ndarray
    charge: np.ndarray
    multiplicity: np.ndarray
    masks: dict[str, np.ndarray]
    provenance: list[str]

    @property
    def n_frames(self) -> int:
        return len(self.atom_offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per frame, (F,)."""
        return np.diff(self.atom_offsets)

    @classmethod
    def empty(cls, n_states: int) -> FrameArrays:
        return cls.from_frames([], n_states)

    @classmethod
    def from_frames(cls, frames: Sequence[Frame], n_states: int) -> FrameArrays:
        """Stack frames (already validated) into columns."""
        n_atoms = np.array([f.n_atoms for f in frames], dtype=np.int64)
        offsets = np.zeros(len(frames) + 1, dtype=np.int64)
        np.cumsum(n_atoms, out=offsets[1:])
        n_total = int(offsets[-1])
        P, Pd, F = n_pairs(n_states), n_dipole_pairs(n_states), len(frames)

        def per_frame(label: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
            out = np.full((F, *shape), np.nan)
            mask = np.zeros(F, dtype=bool)
            for k, f in enumerate(frames):
                value = getattr(f, label)
                if value is not None:
                    out[k] = value
                    mask[k] = True
            return out, mask

        def per_atom(label: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
            out = np.full((n_total, *shape), np.nan)
            mask = np.zeros(F, dtype=bool)
            for k, f in enumerate(frames):
                value = getattr(f, label)
                if value is not None:
                    out[offsets[k] : offsets[k + 1]] = value
                    mask[k] = True
            return out, mask

        energies, m_e = per_frame(ENERGIES, (n_states,))
        dipoles, m_d = per_frame(DIPOLES, (Pd, 3))
        forces, m_f = per_atom(FORCES, (n_states, 3))
        nacs, m_n = per_atom(NACS, (P, 3))
        charge = np.array([f.charge or 0 for f in frames], dtype=np.int32)
        multiplicity = np.array([f.multiplicity or 0 for f in frames], dtype=np.int32)
        masks = {
            ENERGIES: m_e,
            FORCES: m_f,
            NACS: m_n,
            DIPOLES: m_d,
            CHARGE: np.array([f.charge is not None for f in frames], dtype=bool),
            MULTIPLICITY: np.array([f.multiplicity is not None for f in frames], dtype=bool),
        }
        return cls(
            n_states=n_states,
            atom_offsets=offsets,
            numbers=np.concatenate([f.numbers for f in frames]).astype(np.int16) if frames else np.zeros(0, np.int16),
            positions=np.concatenate([f.positions for f in frames]) if frames else np.zeros((0, 3)),
            energies=energies,
            forces=forces,
            nacs=nacs,
            dipoles=dipoles,
            charge=charge,
            multiplicity=multiplicity,
            masks=masks,
            provenance=[json.dumps(f.provenance, sort_keys=True) for f in frames],
        )

    def frame(self, index: int) -> Frame:
        """The frame at `index` as a `Frame` (absent labels None)."""
        a, b = int(self.atom_offsets[index]), int(self.atom_offsets[index + 1])

        def pick(label: str, value: np.ndarray) -> np.ndarray | None:
            return value.copy() if self.masks[label][index] else None

        return Frame(
            numbers=self.numbers[a:b].copy(),
            positions=self.positions[a:b].copy(),
            energies=pick(ENERGIES, self.energies[index]),
            forces=pick(FORCES, self.forces[a:b]),
            nacs=pick(NACS, self.nacs[a:b]),
            dipoles=pick(DIPOLES, self.dipoles[index]),
            charge=int(self.charge[index]) if self.masks[CHARGE][index] else None,
            multiplicity=int(self.multiplicity[index]) if self.masks[MULTIPLICITY][index] else None,
            provenance=json.loads(self.provenance[index]),
        )

    def frames(self) -> list[Frame]:
        return [self.frame(i) for i in range(self.n_frames)]

    def atom_index(self, frame_indices: np.ndarray) -> np.ndarray:
        """Concatenated atom indices of the given frames, in order."""
        starts = self.atom_offsets[frame_indices]
        counts = self.atom_offsets[np.asarray(frame_indices) + 1] - starts
        return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))

    def select(self, frame_indices: Sequence[int] | np.ndarray) -> FrameArrays:
        """A new FrameArrays holding the given frames, in the given order."""
        idx = np.asarray(frame_indices, dtype=np.int64)
        atoms = self.atom_index(idx)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(self.n_atoms[idx], out=offsets[1:])
        return FrameArrays(
            n_states=self.n_states,
            atom_offsets=offsets,
            numbers=self.numbers[atoms],
            positions=self.positions[atoms],
            energies=self.energies[idx],
            forces=self.forces[atoms],
            nacs=self.nacs[atoms],
            dipoles=self.dipoles[idx],
            charge=self.charge[idx],
            multiplicity=self.multiplicity[idx],
            masks={k: v[idx] for k, v in self.masks.items()},
            provenance=[self.provenance[i] for i in idx],
        )


__all__ = ["Frame", "FrameArrays"]
