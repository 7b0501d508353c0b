"""NAC vectors from finite differences of wavefunction overlaps: CIS-like TDA states, and the pseudo-wavefunctions
of full TDDFT (RPA) states.

A closed-shell TDA singlet is Psi_I = sum_ia X_ia (Phi_ia(alpha) + Phi_ia(beta)) / sqrt(2) with sum X^2 = 1. Overlaps
between determinants at two geometries follow from the MO overlap matrix S = C^T S_AO(R, R') C' (occupied block O,
D0 = det O): R[i,a] (bra row i -> virtual a), C[j,b] (ket column j -> virtual b) and M[ia,jb] (both) are
determinants of O with those replacements, and with G = M D0 + R (x) C

    <0|0'> = D0^2,   <0|J'> = sqrt(2) D0 sum_jb X'_jb C[j,b],   <I|0'> = sqrt(2) D0 sum_ia X_ia R[i,a],
    <I|J'> = sum_ia,jb X_ia X'_jb G[ia,jb].

Full TDDFT states (X, Y with X.X - Y.Y = 1) have no wavefunction; their pseudo-wavefunction overlaps use the response
metric, <I|J'> = X G X' - Y G Y', and X - Y in the ground-excited overlaps (the combination whose derivative gives the
Chernyak-Mukamel coupling (X + Y).dV / w in a complete basis). For Y = 0 both are the TDA overlaps.

d_IJ along each Cartesian coordinate is (<I(R)|J(R+h)> - <I(R)|J(R-h)>) / 2h after fixing the signs of the displaced
states by their overlap with themselves at R (6n displaced calculations): NACs without electron-translation factors
(the basis functions move with the nuclei). Electron-translation factors (Fatehi and Subotnik, J. Phys. Chem. Lett. 3,
2039 (2012): drop the antisymmetric part of the basis-function overlap derivative) remove the antisymmetric part of
the same derivative taken with the MO coefficients and amplitudes frozen, which needs overlaps only. A state that
swaps order between displacements (small self-overlap) is reported as a root flip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from exsnn.data.properties import state_pairs
from exsnn.qm.excited import excited_states
from exsnn.qm.results import ExcitedStates, QMFailure
from exsnn.qm.scf import build_molecule
from exsnn.qm.settings import QMSettings


@dataclass
class CISWavefunction:
    """CIS-like (TDA) or pseudo-wavefunction (TDDFT) states at one geometry as MO coefficients and amplitudes."""

    mol: Any
    occupied: np.ndarray  # (nao, nocc) MO coefficients
    virtual: np.ndarray  # (nao, nvir)
    amplitudes: np.ndarray  # X (N-1, nocc, nvir), X.X - Y.Y = 1
    deexcitations: np.ndarray  # Y (N-1, nocc, nvir), zero for TDA

    def density(self) -> np.ndarray:
        """Closed-shell ground-state AO density matrix (nao, nao)."""
        return 2.0 * self.occupied @ self.occupied.T


def cis_wavefunction(states: ExcitedStates) -> CISWavefunction:
    """The determinant expansion of `states` (ground state and kept roots) for overlaps with other geometries."""
    mf = states.mf
    occ = mf.mo_occ > 0
    X, Y = states.amplitudes()
    return CISWavefunction(states.mol, mf.mo_coeff[:, occ], mf.mo_coeff[:, ~occ], X, Y)


def state_overlaps(bra: CISWavefunction, ket: CISWavefunction) -> np.ndarray:
    """<Psi_I(bra geometry)|Psi_J(ket geometry)> for I, J = S0, S1, ..., (N, N)."""
    from pyscf import gto

    s_ao = gto.intor_cross("int1e_ovlp", bra.mol, ket.mol)
    bra_orbitals = np.hstack([bra.occupied, bra.virtual])
    ket_orbitals = np.hstack([ket.occupied, ket.virtual])
    s = bra_orbitals.T @ s_ao @ ket_orbitals
    nocc, nvir = bra.occupied.shape[1], bra.virtual.shape[1]
    O = s[:nocc, :nocc]
    D0 = np.linalg.det(O)
    i, a = np.meshgrid(np.arange(nocc), np.arange(nvir), indexing="ij")
    i, a = i.ravel(), a.ravel()  # excitation index k = i * nvir + a
    rows = np.tile(np.arange(nocc), (len(i), 1))
    rows[np.arange(len(i)), i] = nocc + a
    R = np.linalg.det(s[rows[:, :, None], np.arange(nocc)[None, None, :]]).reshape(nocc, nvir)
    C = np.linalg.det(s[np.arange(nocc)[None, :, None], rows[:, None, :]]).reshape(nocc, nvir)
    M = np.linalg.det(s[rows[:, None, :, None], rows[None, :, None, :]])  # (K, K) bra k, ket l
    X, Xp = bra.amplitudes.reshape(len(bra.amplitudes), -1), ket.amplitudes.reshape(len(ket.amplitudes), -1)
    Y, Yp = bra.deexcitations.reshape(X.shape), ket.deexcitations.reshape(Xp.shape)
    G = M * D0 + np.outer(R.ravel(), C.ravel())
    n = 1 + len(X)
    out = np.zeros((n, n))
    out[0, 0] = D0**2
    out[0, 1:] = np.sqrt(2) * D0 * ((Xp - Yp) @ C.ravel())
    out[1:, 0] = np.sqrt(2) * D0 * ((X - Y) @ R.ravel())
    out[1:, 1:] = X @ G @ Xp.T - Y @ G @ Yp.T
    return out


def _central_differences(n_atoms: int, step: float, overlaps_at: Callable[[int, int, float], np.ndarray]) -> np.ndarray:
    """(n, 3, N, N) derivative of overlaps_at(displaced index (atom, axis), sign) by central differences."""
    out = None
    for atom in range(n_atoms):
        for axis in range(3):
            plus, minus = overlaps_at(atom, axis, 1.0), overlaps_at(atom, axis, -1.0)
            if out is None:
                out = np.zeros((n_atoms, 3, *plus.shape))
            out[atom, axis] = (plus - minus) / (2 * step)
    assert out is not None
    return out


def _pairs(derivative: np.ndarray) -> np.ndarray:
    """(n, 3, N, N) -> (n, P, 3) in exsnn pair order."""
    return np.stack([derivative[:, :, i, j] for i, j in state_pairs(derivative.shape[-1])], axis=1)


def basis_translation_nacs(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, reference: ExcitedStates) -> np.ndarray:
    """The part of the NACs (n, P, 3) that electron-translation factors remove: the antisymmetric part of the overlap
    derivative with the MO coefficients frozen (only the basis functions move with their nuclei), by central
    differences (no electronic-structure calculation at the displaced geometries)."""
    wave = cis_wavefunction(reference)

    def frozen(atom: int, axis: int, sign: float) -> np.ndarray:
        displaced = positions.copy()
        displaced[atom, axis] += sign * settings.fd_step
        return state_overlaps(wave, replace(wave, mol=build_molecule(numbers, displaced, settings)))

    derivative = _central_differences(len(numbers), settings.fd_step, frozen)
    return _pairs(0.5 * (derivative - derivative.transpose(0, 1, 3, 2)))


def finite_difference_nacs(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, reference: ExcitedStates) -> np.ndarray:
    """NACs (n, P, 3) in 1/Bohr at `positions` from central differences of state overlaps (see module docstring);
    with electron-translation factors (settings.etf) the basis-translation part is removed."""
    wave = cis_wavefunction(reference)
    guess = reference.mf.make_rdm1()

    def displaced_overlaps(atom: int, axis: int, sign: float) -> np.ndarray:
        displaced = positions.copy()
        displaced[atom, axis] += sign * settings.fd_step
        # displaced geometries start from the checked reference density: no stability analysis of their own
        other = cis_wavefunction(excited_states(numbers, displaced, settings, guess_dm=guess, check_stability=False))
        s = state_overlaps(wave, other)
        diagonal = np.diag(s)
        if np.abs(diagonal).min() < 0.5:
            raise QMFailure(
                f"root flip between displaced geometries (self-overlap {np.abs(diagonal).min():.2f}, atom {atom}, axis {'xyz'[axis]})"
            )
        return s * np.sign(diagonal)[None, :]

    nacs = _pairs(_central_differences(len(numbers), settings.fd_step, displaced_overlaps))
    if settings.etf:
        nacs = nacs - basis_translation_nacs(numbers, positions, settings, reference)
    return nacs
