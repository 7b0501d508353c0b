"""What one PySCF calculation gives: the excited states at a geometry (live PySCF objects, or saved as plain arrays to
rebuild them without solving again), the labels, or the reason it failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exsnn.errors import ElectronicStructureError


class QMFailure(ElectronicStructureError):
    """A calculation that could not give trustworthy results; `reason` says why. Caught inside `exsnn.qm` and
    recorded with the frame (labelling) or turned into NaN (the potential)."""


@dataclass
class SavedStates:
    """A converged SCF and its excited-state roots as plain arrays (picklable, a few nao^2 numbers): enough to rebuild
    the PySCF objects at the same geometry without a new SCF or TD solve, for gradients and couplings asked later.

    mo_coeff (nao, nmo), mo_occ and mo_energy (nmo,) in Hartree, e_tot in Hartree; excitations (R,) in Hartree and
    amplitudes [(x, y)] as PySCF stores them (x, y (nocc, nvir), y = 0 for TDA) for every solved root, None without
    excited states; roots: the kept roots."""

    mo_coeff: np.ndarray
    mo_occ: np.ndarray
    mo_energy: np.ndarray
    e_tot: float
    excitations: np.ndarray | None
    amplitudes: list[tuple[np.ndarray, np.ndarray | float]] | None
    roots: list[int]
    scf_attempts: list[str]


@dataclass
class ExcitedStates:
    """Ground + excited states at one geometry: the PySCF objects and what was read from them (atomic units)."""

    mol: Any
    mf: Any
    td: Any | None
    energies: np.ndarray  # (N,)
    roots: list[int]  # indices of the kept TD roots
    scf_attempts: list[str]

    def density(self) -> np.ndarray:
        """Ground-state AO density matrix (nao, nao)."""
        return np.asarray(self.mf.make_rdm1())

    def amplitudes(self) -> tuple[np.ndarray, np.ndarray]:
        """Excitation and de-excitation amplitudes X, Y (R, nocc, nvir) of the kept roots, normalised to
        X.X - Y.Y = 1 (PySCF stores them divided by sqrt(2)); Y = 0 for TDA."""
        X, Y = [], []
        for root in self.roots:
            x, y = self.td.xy[root]
            x = np.asarray(x)
            y = np.zeros_like(x) if np.isscalar(y) else np.asarray(y)
            norm = np.sqrt(np.sum(x * x) - np.sum(y * y))
            X.append(x / norm)
            Y.append(y / norm)
        return np.array(X), np.array(Y)

    def save(self) -> SavedStates:
        """The solution as plain arrays (see `SavedStates`; `exsnn.qm.excited.restore_states` rebuilds it)."""
        mf = self.mf
        amplitudes = None
        if self.td is not None:
            amplitudes = [(np.array(x), y if np.isscalar(y) else np.array(y)) for x, y in self.td.xy]
        return SavedStates(np.array(mf.mo_coeff), np.array(mf.mo_occ), np.array(mf.mo_energy), float(mf.e_tot),
                           None if self.td is None else np.array(self.td.e), amplitudes, list(self.roots),
                           list(self.scf_attempts))


@dataclass
class QMResult:
    """Labels of one geometry, or the reason it failed. Arrays in atomic units, exsnn layout; the forces of states
    whose gradients were not asked for are NaN (`gradient_states` lists those computed)."""

    energies: np.ndarray | None = None  # (N,)
    forces: np.ndarray | None = None  # (n, N, 3)
    nacs: np.ndarray | None = None  # (n, P, 3)
    nac_numerators: np.ndarray | None = None  # (n, P, 3) h_ij = (E_j - E_i) d_ij, Hartree/Bohr (analytic NACs)
    transition_dipoles: np.ndarray | None = None  # (N-1, 3) S0 -> Sk
    oscillator_strengths: np.ndarray | None = None  # (N-1,)
    dipoles: np.ndarray | None = None  # (Pd, 3) e*Bohr, every pair 00, 01, ... (SA-CASSCF), the network's dipole layout
    failure: str | None = None
    reference_overlaps: list[float] | None = None  # |<state k at the reference|state k here>|, k = 0..N-1
    root_flips: list[list[float]] | None = None  # [state here, matching reference state, |overlap|] where they differ
    density: np.ndarray | None = None  # converged ground-state AO density (nao, nao): a start for a nearby geometry
    orbitals: np.ndarray | None = None  # converged SA-CASSCF orbitals (nao, nmo): the next step's start along a path
    saved: SavedStates | None = None  # the SCF + TD solution, when asked for (gradients/NACs at this geometry later)
    gradient_states: list[int] = field(default_factory=list)  # states whose gradients this calculation computed
    timings: dict[str, float] = field(default_factory=dict)  # "scf_and_excited" only when an SCF + TD solve ran
    notes: list[str] = field(default_factory=list)
