"""State-averaged CASSCF labels with PySCF's analytic gradients and NACs (equal weights over the states).

References: PySCF's SA-CASSCF gradients and NACs (pyscf.grad.sacasscf, pyscf.nac.sacasscf); the NAC formulation of
Lengsfield, Saxe and Yarkony, J. Chem. Phys. 81, 4549 (1984).
"""

from __future__ import annotations

import time

import numpy as np

from exsnn.data.properties import state_pairs
from exsnn.qm.results import QMFailure, QMResult
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import QMSettings


def label_casscf(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, result: QMResult) -> None:
    """SA-CASSCF (equal weights over n_states) energies, analytic gradients and NACs (PySCF's own)."""
    from pyscf import mcscf

    mol = build_molecule(numbers, positions, settings)
    mf, attempts = run_scf(mol, settings)
    result.notes += attempts
    N = settings.n_states
    t = time.perf_counter()
    mc = mcscf.CASSCF(mf, settings.ncas, settings.nelecas).state_average_([1.0 / N] * N)
    mc.conv_tol = settings.scf_conv_tol
    mc.kernel()
    if not mc.converged:
        raise QMFailure("SA-CASSCF did not converge")
    result.energies = np.asarray(mc.e_states)
    if np.any(np.diff(result.energies) < 0):
        raise QMFailure("SA-CASSCF states are not ordered by energy")
    result.timings["scf_and_excited"] = time.perf_counter() - t
    t = time.perf_counter()
    gradient = mc.nuc_grad_method()
    result.forces = -np.stack([gradient.kernel(state=k) for k in range(N)], axis=1)
    result.timings["gradients"] = time.perf_counter() - t
    if settings.nacs == "analytic" and N > 1:
        t = time.perf_counter()
        coupling = mc.nac_method()
        coupling.use_etfs = settings.etf
        result.nacs = np.stack([coupling.kernel(state=(i, j)) for i, j in state_pairs(N)], axis=1)
        result.timings["nacs"] = time.perf_counter() - t
