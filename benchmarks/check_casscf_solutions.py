"""Does SA-CASSCF started afresh land on the solution an on-the-fly run followed?

An on-the-fly SA-CASSCF run (`exsnn dynamics` on a `pyscf:casscf...` potential) starts each step from the previous
step's orbitals, so it follows one solution continuously. A label of a campaign starts afresh (the chosen and, with
AVAS, the default-window RHF orbitals; the lower state average kept), as `exsnn.qm.casscf.solve_sa_casscf` does
without guess orbitals. Where SA-CASSCF has several solutions the two can differ, and labels at neighbouring
geometries can then sit on different surfaces. At every `--every`-th recorded step of the running trajectories this
solves SA-CASSCF afresh at the recorded geometry (energies only) and prints where the state average differs from the
recorded one by more than `--tolerance` mHartree, with the largest difference of the state energies relative to S0.

    OMP_NUM_THREADS=1 python benchmarks/check_casscf_solutions.py \\
        datasets/ch2nh2_sacasscf/on_the_fly_sa4/ch2nh2_on_the_fly_sa4.h5 \\
        --method "casscf(6,4)/6-31g*,states=4,charge=1,avas=C 2p;N 2p" [--every 2] [--tolerance 0.5] [--json OUT]

About 5-10 s a geometry for CH2NH2+ SA-4-CASSCF(6,4)/6-31G* on one core.
"""

from __future__ import annotations

import argparse
import json
import sys

import h5py
import numpy as np

from exsnn.errors import ExsnnError
from exsnn.qm.casscf import solve_sa_casscf
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import HARTREE_IN_EV

RUNNING = 0  # steps/status of a running trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run file of an on-the-fly SA-CASSCF run (geometries recorded every step)")
    parser.add_argument("--method", required=True, help="the run's PySCF method spec, e.g. casscf(6,4)/6-31g*,states=4,...")
    parser.add_argument("--every", type=int, default=2, help="every this many recorded steps")
    parser.add_argument("--tolerance", type=float, default=0.5, help="mHartree of state average that count as another solution")
    parser.add_argument("--json", help="also write one row per geometry here")
    args = parser.parse_args()
    if args.every < 1 or not args.tolerance > 0:
        parser.error("--every must be >= 1 and --tolerance > 0")
    try:
        settings = parse_qm_spec(args.method)
        with h5py.File(args.run, "r") as h5:
            numbers = h5["system/numbers"][:]
            positions, geometry_steps = h5["geometries/positions"][:], list(h5["geometries/step"][:])
            energies, steps, status = h5["steps/energies"][:], list(h5["steps/step"][:]), h5["steps/status"][:]
    except (ExsnnError, OSError, KeyError) as exc:
        print(f"check_casscf_solutions.py: {args.run}: {exc}", file=sys.stderr)
        sys.exit(2)
    rows, differing = [], []
    for step in steps[:: args.every]:
        if step not in geometry_steps:
            continue
        for trajectory in np.flatnonzero(status[steps.index(step)] == RUNNING):
            recorded = energies[steps.index(step), trajectory]
            try:
                mf, _ = run_scf(build_molecule(numbers, positions[geometry_steps.index(step), trajectory], settings), settings)
                fresh = np.asarray(solve_sa_casscf(mf, settings)[0].e_states, dtype=float)
            except ExsnnError as exc:
                rows.append({"step": int(step), "trajectory": int(trajectory), "failed": str(exc)})
                continue
            average = 1000 * (fresh.mean() - recorded.mean())
            relative = HARTREE_IN_EV * np.abs((fresh - fresh[0]) - (recorded - recorded[0])).max()
            rows.append({"step": int(step), "trajectory": int(trajectory), "recorded": recorded.tolist(),
                         "fresh": fresh.tolist(), "average_mhartree": float(average), "relative_ev": float(relative)})
            if abs(average) > args.tolerance:
                differing.append(rows[-1])
                print(f"step {step}, trajectory {trajectory}: fresh start {average:+.2f} mHartree in the state average, "
                      f"state energies relative to S0 differ by up to {relative:.2f} eV", flush=True)
    solved = [r for r in rows if "failed" not in r]
    print(f"{len(solved)} geometries ({len(rows) - len(solved)} failed): another solution at {len(differing)}; "
          f"the fresh start lower at {sum(r['average_mhartree'] < 0 for r in differing)}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
