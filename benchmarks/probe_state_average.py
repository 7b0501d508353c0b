"""Diagnostic for issue #16: SA-n-CASSCF(6,4)/6-31G* energies (n = 3, 4, 5 averaged states) at 7 points on the
straight line between the two geometries of the on-the-fly CH2NH2+ run where its total energy jumped in one step.
A level of theory fit for dynamics changes smoothly there.

    .venv/bin/python benchmarks/probe_state_average.py   (about 2 hours on one core: SA-3 often fails to converge)

Energies in eV relative to the trajectory's first S0 energy; a failed SA-CASSCF prints nan.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from exsnn.qm.casscf import solve_sa_casscf
from exsnn.qm.results import QMFailure
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import HARTREE_IN_EV

RUN = Path(__file__).resolve().parents[1] / "datasets/ch2nh2_sacasscf/on_the_fly/ch2nh2_on_the_fly.h5"
JUMPS = [(0, 39), (3, 37), (2, 26)]  # (trajectory, step): the three largest one-step total-energy jumps


def energies_along(numbers: np.ndarray, start: np.ndarray, end: np.ndarray, n_states: int) -> np.ndarray:
    """SA-n energies (7, n) in Hartree from `start` to `end` (Bohr), each point started from the previous orbitals."""
    settings = parse_qm_spec(f"casscf(6,4)/6-31g*,states={n_states},charge=1,avas=C 2p;N 2p")
    guess, rows = None, []
    for weight in np.linspace(0.0, 1.0, 7):
        mf, _ = run_scf(build_molecule(numbers, (1 - weight) * start + weight * end, settings), settings)
        try:
            mc, _ = solve_sa_casscf(mf, settings, guess)
        except QMFailure:
            rows.append(np.full(n_states, np.nan))
            continue
        guess = mc.mo_coeff
        rows.append(np.asarray(mc.e_states))
    return np.array(rows)


def main() -> None:
    with h5py.File(RUN) as run:
        numbers, positions, recorded = run["system/numbers"][:], run["geometries/positions"][:], run["steps/energies"][:]
    for b, k in JUMPS:
        origin = recorded[0, b, 0]
        print(f"trajectory {b}, steps {k} -> {k + 1}, recorded SA-3:",
              np.round((recorded[k:k + 2, b] - origin) * HARTREE_IN_EV, 2).tolist(), flush=True)
        for n_states in (4, 5, 3):
            rows = (energies_along(numbers, positions[k, b], positions[k + 1, b], n_states) - origin) * HARTREE_IN_EV
            print(f"  SA-{n_states}: " + " | ".join(" ".join(f"{v:6.2f}" for v in row[:4]) for row in rows))
            steps = np.abs(np.diff(rows, axis=0))
            largest = [float(np.nanmax(c)) if np.isfinite(c).any() else float("nan") for c in steps.T]
            print(f"  SA-{n_states} largest change between neighbouring points per state:", np.round(largest, 2).tolist(),
                  flush=True)


if __name__ == "__main__":
    main()
