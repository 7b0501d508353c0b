"""Closed-shell ground states with PySCF: building the molecule, SCF with retries, following internal instabilities."""

from __future__ import annotations

from typing import Any

import numpy as np

from exsnn.qm.results import QMFailure
from exsnn.qm.settings import QMSettings


def build_molecule(numbers: np.ndarray, positions: np.ndarray, settings: QMSettings) -> Any:
    from pyscf import gto

    try:
        return gto.M(atom=[(int(z), tuple(map(float, r))) for z, r in zip(numbers, positions)], unit="Bohr",
                     basis=settings.basis, charge=settings.charge, spin=0, verbose=0)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise QMFailure(f"cannot build the molecule ({type(exc).__name__}: {exc})") from None


def mean_field(mol: Any, settings: QMSettings) -> Any:
    """An unsolved closed-shell mean field for `mol`: RHF for xc = 'hf', RKS with the functional otherwise."""
    from pyscf import dft, scf

    if settings.xc == "hf":
        return scf.RHF(mol)
    mf = dft.RKS(mol)
    mf.xc = settings.xc
    return mf


def run_scf(mol: Any, settings: QMSettings, guess_dm: np.ndarray | None = None,
            previous_dm: np.ndarray | None = None, check_stability: bool | None = None) -> tuple[Any, list[str]]:
    """Converge the ground state: from guess_dm (default: PySCF's guess), then from previous_dm (a converged density
    of a nearby geometry, e.g. the reference's or the previous step's) when given, then with a level shift, damping
    and the second-order solver; then follow internal instabilities (settings.check_stability unless given)."""
    if check_stability is None:
        check_stability = settings.check_stability
    attempts: list[str] = []
    strategies: list[tuple[str, np.ndarray | None, dict[str, Any] | None]] = [("default", guess_dm, {})]
    if previous_dm is not None:
        strategies.append(("previous density", previous_dm, {}))
    strategies += [("level shift 0.3", guess_dm, {"level_shift": 0.3}),
                   ("damping 0.5", guess_dm, {"damp": 0.5, "diis_start_cycle": 4}), ("second order", guess_dm, None)]
    for name, start, options in strategies:
        mf = mean_field(mol, settings)
        mf.conv_tol = settings.scf_conv_tol
        mf.conv_tol_grad = settings.scf_conv_tol_grad
        mf.max_cycle = 100
        if options is None:
            mf = mf.newton()
        else:
            for key, value in options.items():
                setattr(mf, key, value)
        try:
            mf.kernel(dm0=start)
        except (np.linalg.LinAlgError, RuntimeError, ValueError) as exc:
            attempts.append(f"{name}: {type(exc).__name__}")
            continue
        attempts.append(f"{name}: {'converged' if mf.converged else 'not converged'}")
        if mf.converged and np.isfinite(mf.e_tot):
            if getattr(mf, "level_shift", 0):  # a level shift biases nothing at convergence, but recheck without it
                mf.level_shift = 0
            if check_stability:
                # SA-CASSCF only starts from the RHF orbitals and optimises them itself: an RHF that stays unstable
                # is still a start (CH2NH2+ (8,6) campaign: a label lost where following returned to the same energy)
                mf = follow_internal_instabilities(mf, mol, settings, attempts, required=settings.excited != "casscf")
            return mf, attempts
    raise QMFailure("SCF did not converge (" + "; ".join(attempts) + ")")


def follow_internal_instabilities(mf: Any, mol: Any, settings: QMSettings, attempts: list[str], max_follow: int = 2,
                                  required: bool = True) -> Any:
    """Check the converged closed-shell solution for an internal (RHF -> RHF / RKS -> RKS) instability, a saddle point
    of the energy whose excited states would be meaningless; rotate the orbitals along the unstable direction and
    converge again, at most max_follow times. If it stays unstable: raises QMFailure when `required`, else returns the
    last solution (noted in attempts)."""
    for _ in range(max_follow + 1):
        # only the lowest orbital-Hessian eigenvalue matters: one Davidson root (PySCF's default of three costs 2x)
        rotated, _, stable, _ = mf.stability(internal=True, external=False, return_status=True, nroots=1)
        if stable:
            return mf
        if len([a for a in attempts if a.startswith("internal instability")]) >= max_follow:
            break
        energy = mf.e_tot
        follow = mean_field(mol, settings)
        follow.conv_tol, follow.conv_tol_grad, follow.max_cycle = settings.scf_conv_tol, settings.scf_conv_tol_grad, 100
        follow.kernel(dm0=mf.make_rdm1(rotated, mf.mo_occ))
        attempts.append(f"internal instability at E = {energy:.8f}: followed, "
                        f"{'converged' if follow.converged else 'not converged'} at E = {follow.e_tot:.8f}")
        if not follow.converged:
            break
        mf = follow
    if not required and mf.converged:
        attempts.append("still internally unstable: kept as the start of the orbital optimisation")
        return mf
    raise QMFailure("SCF solution internally unstable (" + "; ".join(attempts) + ")")
