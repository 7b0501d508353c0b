"""Analytic NAC vectors between TDA (CIS-like) and full TDDFT (RPA) states: ground-excited and excited-excited, with
or without electron-translation factors (ETF).

States: Psi_I = sum_ia X_ia (Phi_ia(alpha) + Phi_ia(beta)) / sqrt(2) with sum X^2 = 1 (PySCF stores x = X / sqrt(2)).
K_pq = <phi_p|d chi -> phi_q> is the half-derivative overlap of basis functions moving with their nucleus and
S = K + K^T the overlap derivative (MO basis). ETF drop the antisymmetric part of K; then the sum over atoms vanishes.

Ground-excited. Only the replaced orbital's derivative survives in <Phi_0|d Psi_I>, so

    d_0I = sqrt(2) sum_ia X_ia <phi_i|d phi_a> = -sqrt(2) sum_ai X_ai (U_ai + K_ai),

with U the coupled-perturbed (CPHF/CPKS) orbital response. The response enters only through X.U, so instead of solving
for U under all 3n perturbations one solves L Z = X (L: the CPHF operator, symmetric) for all states at once (one
multi-right-hand-side solve), and

    X.U(xi) = -sum_ai Z_ai (F(xi)_ai - S(xi)_ai e_i) + 1/2 sum_kl S(xi)_kl V_kl,

where F(xi) is the skeleton derivative Fock matrix and V_kl the occupied block of the response potential of Z (the
occupied-occupied relaxation U_kl = -S_kl / 2). With ETF, K_ai -> S_ai / 2.

Excited-excited. Differentiating A X_J = w_J X_J (A: the TDA matrix in the configuration basis of the current MOs)
and projecting on X_I gives the pseudo-wavefunction coupling (Li and Liu, J. Chem. Phys. 141, 014110 (2014); for CIS
it is exact, cf. Fatehi et al., J. Chem. Phys. 135, 234105 (2011)):

    d_IJ = X_I.(dA).X_J / (w_J - w_I) + sum_iab X_I,ia X_J,ib T_ab - sum_ija X_I,ia X_J,ja T_ji,

with T = U + K restricted to the occupied-occupied and virtual-virtual blocks. Taking their orbital rotations as
U = -S/2 (any antisymmetric part cancels between the two terms) leaves T = (K - K^T)/2, which ETF remove. The
numerator h_IJ = X_I.(dA).X_J is the symmetric bilinear form whose diagonal is the excitation-energy gradient
(orbital relaxation by a Z-vector solve, XC kernel derivatives included); PySCF's TD gradient evaluates the quadratic
form G(v) = G_0 + v.(dA).v for any amplitude vector v, so by polarisation

    h_IJ = [G(x_I + x_J) - G(x_I) - G(x_J) + G_0] / 2,

where G(x_I) and G_0 are the state gradients the labels need anyway: one extra gradient-like evaluation per pair. For
TDA-DFT this is the pseudo-wavefunction level (no quadratic-response terms).

Full TDDFT (RPA): M Z_J = w_J D Z_J with M = [[A, B], [B, A]], Z = (X, Y), metric D = diag(1, -1), Z_I.D.Z_J = delta_IJ.
The same steps give X_I.dX_J - Y_I.dY_J = Z_I.(dM).Z_J / (w_J - w_I), where Z.(dM).Z is again the quadratic form of
PySCF's TDDFT gradient, and the basis-rotation term becomes X_I T X_J - Y_I T Y_J. Ground-excited: d_0I = -sqrt(2)
(X - Y).(U + K); in a complete basis (K = 0, U = -(A+B)^-1 dV) this is sqrt(2) (X + Y).dV / w, the exact
Chernyak-Mukamel coupling of linear-response theory, because (A + B)(X + Y) = w (X - Y) (the structure of Send and
Furche, J. Chem. Phys. 132, 044107 (2010): Hellmann-Feynman term plus Pulay terms). For Y = 0 everything
reduces to the TDA expressions; the finite-difference reference in `overlap_nacs` uses the same pseudo-wavefunction
overlaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from exsnn.data.properties import state_pairs
from exsnn.qm.results import ExcitedStates


@dataclass
class AnalyticCouplings:
    """All pairs (i < j, exsnn order): nacs d_ij (n_atoms, P, 3) in 1/Bohr and h_ij = (E_j - E_i) d_ij in
    Hartree/Bohr (finite where states are close)."""

    nacs: np.ndarray
    numerators: np.ndarray


def basis_derivative_overlaps(mol: Any, mo_coeff: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(atom, axis, K) with K_pq = <phi_p | (d/dR_atom,axis chi) phi_q>, (nmo, nmo), one atom and axis at a time."""
    ip = mol.intor("int1e_ipovlp", comp=3)  # <d/dr chi_mu | chi_nu>
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        for axis in range(3):
            half = np.zeros_like(ip[axis])
            half[:, p0:p1] = -ip[axis].T[:, p0:p1]  # <chi_mu | d chi_nu / dR> for nu on this atom
            yield atom, axis, mo_coeff.T @ half @ mo_coeff


def ground_excited_nacs(states: ExcitedStates, etf: bool = False, tol: float = 1e-10) -> np.ndarray:
    """d_0I for every kept root, (n_atoms, N-1, 3) in 1/Bohr, signs as PySCF's amplitudes at this geometry. Full
    TDDFT: X - Y takes the place of X (see the module docstring)."""
    from pyscf.hessian import rhf as rhf_hessian
    from pyscf.scf import cphf

    mf, mol = states.mf, states.mol
    C, occupied = mf.mo_coeff, mf.mo_occ > 0
    nocc, nmo = int(occupied.sum()), C.shape[1]
    nvir = nmo - nocc
    e_occ = mf.mo_energy[occupied]
    response = rhf_hessian.gen_vind(mf, C, mf.mo_occ)  # (k, nmo, nocc) orbital rotations -> induced potential (MO)

    def pad(vo: np.ndarray) -> np.ndarray:
        full = np.zeros((len(vo), nmo, nocc))
        full[:, nocc:] = vo
        return full

    def response_vo(z: np.ndarray) -> np.ndarray:
        return response(pad(z.reshape(-1, nvir, nocc))).reshape(-1, nmo, nocc)[:, nocc:]

    X_all, Y_all = states.amplitudes()
    X = np.ascontiguousarray((X_all - Y_all).transpose(0, 2, 1))  # (R, nvir, nocc): X - Y (= X for TDA)
    Z = cphf.solve(response_vo, mf.mo_energy, mf.mo_occ, -X, max_cycle=100, tol=tol)[0].reshape(X.shape)
    V = response(pad(Z)).reshape(len(X), nmo, nocc)[:, :nocc]  # (R, nocc, nocc)
    skeleton_fock = mf.Hessian().make_h1(C, mf.mo_occ)  # per atom (3, nao, nao)
    out = np.zeros((mol.natm, len(X), 3))
    for atom, x, K in basis_derivative_overlaps(mol, C):
        S = K + K.T
        F = C.T @ np.asarray(skeleton_fock[atom])[x] @ C
        orbital_response = (-np.einsum("rai,ai->r", Z, F[nocc:, :nocc] - S[nocc:, :nocc] * e_occ[None, :])
                            + 0.5 * np.einsum("rkl,kl->r", V, S[:nocc, :nocc]))
        basis = K[nocc:, :nocc] if not etf else 0.5 * S[nocc:, :nocc]
        out[atom, :, x] = -np.sqrt(2) * (orbital_response + np.einsum("rai,ai->r", X, basis))
    return out


def transition_gradient(states: ExcitedStates, td_gradient: Any, gradients: np.ndarray, I: int, J: int) -> np.ndarray:
    """h_IJ = X_I.(dA).X_J, (n_atoms, 3) in Hartree/Bohr, for excited states I, J >= 1 (I = J: the gradient of the
    excitation energy). gradients: the total gradients (n_atoms, N, 3) of S0 and the excited states."""
    X, Y = states.amplitudes()
    pyscf_scale = 1.0 / np.sqrt(2.0)  # PySCF's TD gradient takes x, y normalised to 1/2
    combined = td_gradient.kernel(xy=(pyscf_scale * (X[I - 1] + X[J - 1]), pyscf_scale * (Y[I - 1] + Y[J - 1])))
    return 0.5 * (combined - gradients[:, I] - gradients[:, J] + gradients[:, 0])


def basis_rotation_coupling(states: ExcitedStates, I: int, J: int) -> np.ndarray:
    """sum_iab X_I,ia X_J,ib T_ab - sum_ija X_I,ia X_J,ja T_ji (minus the same with Y) with T = (K - K^T)/2,
    (n_atoms, 3) in 1/Bohr: the part of d_IJ (I, J >= 1) that electron-translation factors remove."""
    mf = states.mf
    nocc = int((mf.mo_occ > 0).sum())
    X, Y = states.amplitudes()  # (R, nocc, nvir)
    # (a, b): sum_i X_I,ia X_J,ib - Y_I,ia Y_J,ib;  (i, j): sum_a X_I,ia X_J,ja - Y_I,ia Y_J,ja
    virtual = X[I - 1].T @ X[J - 1] - Y[I - 1].T @ Y[J - 1]
    occupied = X[I - 1] @ X[J - 1].T - Y[I - 1] @ Y[J - 1].T
    out = np.zeros((states.mol.natm, 3))
    for atom, axis, K in basis_derivative_overlaps(states.mol, mf.mo_coeff):
        T = 0.5 * (K - K.T)
        out[atom, axis] = np.sum(T[nocc:, nocc:] * virtual) - np.sum(T[:nocc, :nocc].T * occupied)
    return out


def excited_pair_numerator(states: ExcitedStates, td_gradient: Any, gradients: np.ndarray, I: int, J: int, etf: bool = True) -> np.ndarray:
    """h_IJ = (E_J - E_I) d_IJ between excited states I != J >= 1, (n_atoms, 3) in Hartree/Bohr; finite at
    degeneracies and symmetric (h_JI = h_IJ, so d_JI = -d_IJ)."""
    h = transition_gradient(states, td_gradient, gradients, I, J)
    if etf:
        return h
    return h + (states.energies[J] - states.energies[I]) * basis_rotation_coupling(states, I, J)


def excited_gradient_tool(states: ExcitedStates, tol: float = 1e-10) -> Any:
    """PySCF's TD gradient object used for the pair quadratic forms (tight Z-vector convergence)."""
    td_gradient = states.td.nuc_grad_method()
    td_gradient.cphf_conv_tol = max(tol, 1e-10)
    return td_gradient


def analytic_nacs(states: ExcitedStates, gradients: np.ndarray, etf: bool = True, tol: float = 1e-10) -> AnalyticCouplings:
    """NACs of every pair of the N states (see module docstring). gradients: total gradients (n_atoms, N, 3) of all
    states at this geometry, as PySCF's SCF and TD gradients give them."""
    pairs = state_pairs(len(states.energies))
    gaps = np.array([states.energies[j] - states.energies[i] for i, j in pairs])
    numerators = np.zeros((states.mol.natm, len(pairs), 3))
    ground = ground_excited_nacs(states, etf=etf, tol=tol)
    td_gradient = excited_gradient_tool(states, tol) if any(i > 0 for i, _ in pairs) else None
    for p, (i, j) in enumerate(pairs):
        numerators[:, p] = gaps[p] * ground[:, j - 1] if i == 0 else excited_pair_numerator(states, td_gradient, gradients, i, j, etf)
    with np.errstate(divide="ignore", invalid="ignore"):
        nacs = numerators / gaps[None, :, None]
    return AnalyticCouplings(nacs, numerators)
