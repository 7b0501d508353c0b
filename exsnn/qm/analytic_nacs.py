"""Analytic ground-to-excited NAC vectors for TDA (CIS-like) states on top of PySCF's response machinery.

For Psi_I = sum_ia X_ia (Phi_ia(alpha) + Phi_ia(beta)) / sqrt(2) (sum X^2 = 1) only the replaced orbital's
derivative survives in <Phi_0|d Psi_I>, so

    d_0I = sqrt(2) sum_ia X_ia <phi_i|d phi_a> = -sqrt(2) sum_ia X_ia (U_ai + K_ai),

with U the coupled-perturbed orbital response (one multi-right-hand-side CPHF/CPKS solve for all 3n
perturbations, shared by every pair: PySCF's Hessian `solve_mo1`) and K_pq = <phi_p|d chi -> phi_q> the half-
derivative overlap of the basis functions moving with their nucleus. With electron-translation factors (ETF) the
antisymmetric half of K is dropped: d_0I(ETF) = -sqrt(2) sum_ia X_ia (U_ai + S'_ai / 2), S' the full overlap
derivative, which makes the sum over atoms vanish. For TDA-DFT this is the pseudo-wavefunction approximation.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ground_excited_nacs(states: Any, etf: bool = False) -> np.ndarray:
    """d_0I for every kept root, (n_atoms, N-1, 3) in 1/Bohr, signs as PySCF's amplitudes at this geometry."""
    mf, td, mol = states.mf, states.td, states.mol
    C = mf.mo_coeff
    nocc = int((mf.mo_occ > 0).sum())
    hessian = mf.Hessian()
    mo1, _ = hessian.solve_mo1(mf.mo_energy, C, mf.mo_occ, hessian.make_h1(C, mf.mo_occ))
    to_mo = C.T @ mol.intor("int1e_ovlp")  # C^-1: mo1 is returned in the AO basis (C U)
    ip = mol.intor("int1e_ipovlp", comp=3)  # <d/dr chi_mu | chi_nu>
    amplitudes = np.array([np.asarray(td.xy[k][0]) / np.linalg.norm(td.xy[k][0]) for k in states.roots])  # (R, nocc, nvir)
    out = np.zeros((mol.natm, len(states.roots), 3))
    for atom, (_, _, p0, p1) in enumerate(mol.aoslice_by_atom()):
        U = np.einsum("pm,xmi->xpi", to_mo, np.asarray(mo1[atom]))  # (3, nmo, nocc)
        for x in range(3):
            half = np.zeros_like(ip[x])
            half[:, p0:p1] = -ip[x].T[:, p0:p1]  # <chi_mu | d chi_nu / dR_atom,x>
            K = C.T @ half @ C
            coupling = K[nocc:, :nocc] if not etf else 0.5 * (K[nocc:, :nocc] + K[:nocc, nocc:].T)
            response = U[x][nocc:, :] + coupling  # (nvir, nocc)
            out[atom, :, x] = -np.sqrt(2) * np.einsum("ria,ai->r", amplitudes, response)
    return out
