"""What one PySCF calculation gives: the excited states at a geometry, the labels, or the reason it failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exsnn.errors import ElectronicStructureError


class QMFailure(ElectronicStructureError):
    """A calculation that could not give trustworthy results; `reason` says why. Caught inside `exsnn.qm` and
    recorded with the frame (labelling) or turned into NaN (the potential)."""


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


@dataclass
class QMResult:
    """Labels of one geometry, or the reason it failed. Arrays in atomic units, exsnn layout."""

    energies: np.ndarray | None = None  # (N,)
    forces: np.ndarray | None = None  # (n, N, 3)
    nacs: np.ndarray | None = None  # (n, P, 3)
    nac_numerators: np.ndarray | None = None  # (n, P, 3) h_ij = (E_j - E_i) d_ij, Hartree/Bohr (analytic NACs)
    transition_dipoles: np.ndarray | None = None  # (N-1, 3) S0 -> Sk
    oscillator_strengths: np.ndarray | None = None  # (N-1,)
    failure: str | None = None
    reference_overlaps: list[float] | None = None  # |<state k at the reference|state k here>|, k = 0..N-1
    root_flips: list[list[float]] | None = None  # [state here, matching reference state, |overlap|] where they differ
    density: np.ndarray | None = None  # converged ground-state AO density (nao, nao): a start for a nearby geometry
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
