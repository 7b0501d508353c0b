"""Excited singlets on top of the SCF: TDA (exact dense diagonalisation for small spaces) or full TDDFT/TDHF (RPA),
with checks (converged, enough roots, positive excitations)."""

from __future__ import annotations

from typing import Any

import numpy as np

from exsnn.qm.results import ExcitedStates, QMFailure
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import QMSettings


def excited_states(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, guess_dm: np.ndarray | None = None,
                   previous_dm: np.ndarray | None = None, check_stability: bool | None = None) -> ExcitedStates:
    """SCF + the lowest n_states - 1 singlet roots, checked (stable reference, converged, enough roots, positive
    excitations)."""
    from pyscf.lib import num_threads

    num_threads(settings.threads)
    mol = build_molecule(numbers, positions, settings)
    mf, attempts = run_scf(mol, settings, guess_dm, previous_dm, check_stability)
    n_roots = settings.n_states - 1
    if n_roots == 0:
        return ExcitedStates(mol, mf, None, np.array([mf.e_tot]), [], attempts)
    n_occ = int((mf.mo_occ > 0).sum())
    available = n_occ * (len(mf.mo_occ) - n_occ)
    if n_roots > available:
        raise QMFailure(f"{n_roots} excited states asked, but only {available} singlet excitations exist in this basis")
    if settings.excited == "tda":
        td = mf.TDA()
    else:
        td = mf.TDHF() if settings.xc == "hf" else mf.TDDFT()  # full TDHF / TDDFT (RPA)
    td.nstates = min(n_roots + settings.extra_roots, available)
    td.conv_tol = settings.td_conv_tol
    td.max_cycle = 200
    if settings.excited == "tda" and available <= settings.dense_limit:
        _diagonalise_tda_exactly(td, n_occ, available)
    else:
        td.kernel()
    converged = np.atleast_1d(td.converged)
    if len(td.e) < n_roots or not np.all(converged[:n_roots]):
        raise QMFailure(f"excited-state roots not converged ({int(np.sum(converged[:n_roots]))} of {n_roots})")
    excitations = np.asarray(td.e[:n_roots])
    if np.any(~np.isfinite(excitations)) or excitations.min() < settings.min_excitation:
        raise QMFailure(f"excitation energy {excitations.min():.2e} Hartree below {settings.min_excitation} (instability or a broken reference)")
    return ExcitedStates(mol, mf, td, np.concatenate([[mf.e_tot], mf.e_tot + excitations]), list(range(n_roots)), attempts)


def _diagonalise_tda_exactly(td: Any, n_occ: int, dimension: int) -> None:
    """Fill td.e, td.xy, td.converged from a dense diagonalisation of the TDA matrix A (singlets)."""
    a_matrix, _ = td.get_ab()
    energies, vectors = np.linalg.eigh(np.asarray(a_matrix).reshape(dimension, dimension))
    n_vir = dimension // n_occ
    keep = td.nstates
    td.e = energies[:keep]
    td.xy = [(vectors[:, k].reshape(n_occ, n_vir) * np.sqrt(0.5), 0) for k in range(keep)]  # PySCF: sum X^2 = 1/2
    td.converged = np.ones(keep, dtype=bool)
