"""Excited singlets on top of the SCF: TDA (exact dense diagonalisation for small spaces) or full TDDFT/TDHF (RPA),
with checks (converged, enough roots, positive excitations); and the same states rebuilt from a saved solution
without solving again."""

from __future__ import annotations

from typing import Any

import numpy as np

from exsnn.qm.results import ExcitedStates, QMFailure, SavedStates
from exsnn.qm.scf import build_molecule, mean_field, run_scf
from exsnn.qm.settings import QMSettings


def excited_states(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, guess_dm: np.ndarray | None = None,
                   previous_dm: np.ndarray | None = None, check_stability: bool | None = None) -> ExcitedStates:
    """SCF + the lowest n_states - 1 singlet roots, checked (stable reference, converged, enough roots, positive
    excitations). positions (n, 3) in Bohr; guess_dm, previous_dm: AO densities to start the SCF from."""
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
    td = _response_solver(mf, settings)
    td.nstates = min(n_roots + settings.extra_roots, available)
    if settings.excited == "tda" and available <= settings.dense_limit:
        _diagonalise_tda_exactly(td, n_occ, available)
    else:
        td.kernel()
    converged = np.atleast_1d(td.converged)
    if len(td.e) < n_roots or not np.all(converged[:n_roots]):
        raise QMFailure(f"excited-state roots not converged ({int(np.sum(converged[:n_roots]))} of {n_roots})")
    excitations = np.asarray(td.e[:n_roots])
    if np.any(~np.isfinite(excitations)) or excitations.min() < settings.min_excitation:
        raise QMFailure(
            f"excitation energy {excitations.min():.2e} Hartree below {settings.min_excitation} (instability or a broken reference)"
        )
    return ExcitedStates(
        mol, mf, td, np.concatenate([[mf.e_tot], mf.e_tot + excitations]), list(range(n_roots)), attempts
    )


def restore_states(
    numbers: np.ndarray, positions: np.ndarray, settings: QMSettings, saved: SavedStates
) -> ExcitedStates:
    """The states of `saved` (computed at exactly these positions with these settings) as live PySCF objects, without
    an SCF or TD solve: gradients and couplings evaluated on them equal those of the original objects."""
    from pyscf.lib import num_threads

    num_threads(settings.threads)
    mol = build_molecule(numbers, positions, settings)
    mf = mean_field(mol, settings)
    mf.mo_coeff, mf.mo_occ, mf.mo_energy = saved.mo_coeff, saved.mo_occ, saved.mo_energy
    mf.e_tot, mf.converged = saved.e_tot, True
    if saved.excitations is None or saved.amplitudes is None:
        return ExcitedStates(mol, mf, None, np.array([saved.e_tot]), [], list(saved.scf_attempts))
    td = _response_solver(mf, settings)
    td.nstates = len(saved.excitations)
    td.e = np.array(saved.excitations)
    td.xy = [(np.array(x), y if np.isscalar(y) else np.array(y)) for x, y in saved.amplitudes]
    td.converged = np.ones(len(td.e), dtype=bool)
    energies = np.concatenate([[saved.e_tot], saved.e_tot + td.e[saved.roots]])
    return ExcitedStates(mol, mf, td, energies, list(saved.roots), list(saved.scf_attempts))


def _response_solver(mf: Any, settings: QMSettings) -> Any:
    """PySCF's unsolved TDA, TDHF or TDDFT (RPA) object for the singlets of `mf`."""
    if settings.excited == "tda":
        td = mf.TDA()
    else:
        td = mf.TDHF() if settings.xc == "hf" else mf.TDDFT()  # full TDHF / TDDFT (RPA)
    td.conv_tol = settings.td_conv_tol
    td.max_cycle = 200
    return td


def _diagonalise_tda_exactly(td: Any, n_occ: int, dimension: int) -> None:
    """Fill td.e, td.xy, td.converged from a dense diagonalisation of the TDA matrix A (singlets)."""
    a_matrix, _ = td.get_ab()
    energies, vectors = np.linalg.eigh(np.asarray(a_matrix).reshape(dimension, dimension))
    n_vir = dimension // n_occ
    keep = td.nstates
    td.e = energies[:keep]
    td.xy = [(vectors[:, k].reshape(n_occ, n_vir) * np.sqrt(0.5), 0) for k in range(keep)]  # PySCF: sum X^2 = 1/2
    td.converged = np.ones(keep, dtype=bool)
