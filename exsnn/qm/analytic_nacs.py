"""Analytic ground-to-excited NAC vectors for TDA (CIS-like) states, with one Z-vector solve per state.

For Psi_I = sum_ia X_ia (Phi_ia(alpha) + Phi_ia(beta)) / sqrt(2) (sum X^2 = 1) only the replaced orbital's
derivative survives in <Phi_0|d Psi_I>, so

    d_0I = sqrt(2) sum_ia X_ia <phi_i|d phi_a> = -sqrt(2) sum_ai X_ai (U_ai + K_ai),

with U the coupled-perturbed (CPHF/CPKS) orbital response and K_pq = <phi_p|d chi -> phi_q> the half-derivative
overlap of basis functions moving with their nucleus. The response enters only through X.U, so instead of solving for
U under all 3n perturbations one solves L Z = X once (L: the CPHF operator, symmetric), and

    X.U(xi) = -sum_ai Z_ai (F(xi)_ai - S(xi)_ai e_i) + 1/2 sum_kl S(xi)_kl V_kl,

where F(xi) is the skeleton derivative Fock matrix, S(xi) the overlap derivative (MO basis) and V_kl the occupied
block of the response potential of Z (the occupied-occupied relaxation U_kl = -S_kl / 2). With electron-translation
factors (ETF) the antisymmetric part of K is dropped (K -> S/2), which makes the sum over atoms vanish. For TDA-DFT
this is the pseudo-wavefunction approximation; the XC kernel enters through PySCF's response functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ground_excited_nacs(states: Any, etf: bool = False, tol: float = 1e-10) -> np.ndarray:
    """d_0I for every kept root, (n_atoms, N-1, 3) in 1/Bohr, signs as PySCF's amplitudes at this geometry."""
    from pyscf.hessian import rhf as rhf_hessian
    from pyscf.scf import cphf

    mf, td, mol = states.mf, states.td, states.mol
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

    X = np.array([np.asarray(td.xy[k][0]).T / np.linalg.norm(td.xy[k][0]) for k in states.roots])  # (R, nvir, nocc)
    Z = cphf.solve(response_vo, mf.mo_energy, mf.mo_occ, -X, max_cycle=100, tol=tol)[0].reshape(X.shape)
    V = response(pad(Z)).reshape(len(X), nmo, nocc)[:, :nocc]  # (R, nocc, nocc)
    skeleton_fock = mf.Hessian().make_h1(C, mf.mo_occ)  # per atom (3, nao, nao)
    ip = mol.intor("int1e_ipovlp", comp=3)  # <d/dr chi_mu | chi_nu>
    out = np.zeros((mol.natm, len(X), 3))
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        fock = np.asarray(skeleton_fock[atom])
        for x in range(3):
            half = np.zeros_like(ip[x])
            half[:, p0:p1] = -ip[x].T[:, p0:p1]  # <chi_mu | d chi_nu / dR_atom,x>
            K = C.T @ half @ C
            S = K + K.T
            F = C.T @ fock[x] @ C
            orbital_response = (-np.einsum("rai,ai->r", Z, F[nocc:, :nocc] - S[nocc:, :nocc] * e_occ[None, :])
                                + 0.5 * np.einsum("rkl,kl->r", V, S[:nocc, :nocc]))
            basis = K[nocc:, :nocc] if not etf else 0.5 * S[nocc:, :nocc]
            out[atom, :, x] = -np.sqrt(2) * (orbital_response + np.einsum("rai,ai->r", X, basis))
    return out
