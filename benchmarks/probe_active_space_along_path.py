"""Active spaces along a recorded trajectory: excitation energies and natural occupations of several SA-CASSCF specs.

An active space chosen at the Franck-Condon point can stop describing the molecule where the dynamics takes it (a
bond breaks whose antibonding orbital is not active). At every `--every`-th recorded step of one trajectory of a run
file, each QM spec is solved (energies only) and the script prints a bond length (`--bond I J`, atoms 0-based,
Angstrom), the state energies relative to S0 (eV) and the SA-CASSCF natural occupations. Where the excitation
energies of a spec with more active orbitals part from the smaller one's, the smaller active space is missing what
the geometry needs.

    OMP_NUM_THREADS=1 python benchmarks/probe_active_space_along_path.py RUN.h5 --trajectory 2 --every 4 --bond 0 1 \\
        --specs "casscf(6,4)/6-31g*,states=4,charge=1,avas=C 2p;N 2p" "casscf(8,6)/6-31g*,states=4,charge=1,avas=C 2p;N 2p"
"""

from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np

from exsnn.errors import ExsnnError
from exsnn.qm.casscf import sa_casscf_states
from exsnn.qm.scf import build_molecule
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import AU_TIME_IN_FS, BOHR_IN_ANGSTROM, HARTREE_IN_EV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run file (exsnn dynamics) with geometries recorded")
    parser.add_argument("--trajectory", type=int, default=0)
    parser.add_argument("--every", type=int, default=4, help="every this many recorded geometries")
    parser.add_argument("--bond", type=int, nargs=2, default=(0, 1), metavar=("I", "J"), help="atoms whose distance to print")
    parser.add_argument("--window", type=float, nargs=2, metavar=("FROM", "TO"), help="only these times (fs)")
    parser.add_argument("--specs", nargs="+", required=True, help="PySCF method specs (casscf...)")
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every must be >= 1")
    try:
        settings = [parse_qm_spec(spec) for spec in args.specs]
        with h5py.File(args.run, "r") as h5:
            numbers = h5["system/numbers"][:]
            positions, steps = h5["geometries/positions"][:], h5["geometries/step"][:]
            if not 0 <= args.trajectory < positions.shape[1] or not all(0 <= i < len(numbers) for i in args.bond):
                raise ExsnnError(f"--trajectory {args.trajectory} or --bond {args.bond} out of range "
                                 f"({positions.shape[1]} trajectories, {len(numbers)} atoms)")
            times = dict(zip(h5["steps/step"][:].tolist(), h5["steps/time"][:] * AU_TIME_IN_FS))
            recorded = dict(zip(h5["steps/step"][:].tolist(), h5["steps/energies"][:, args.trajectory]))
        for setting in settings:  # a basis PySCF does not know: say so before any calculation
            build_molecule(numbers, positions[0, args.trajectory], setting)
    except (ExsnnError, OSError, KeyError) as exc:
        print(f"probe_active_space_along_path.py: {args.run}: {exc}", file=sys.stderr)
        sys.exit(2)
    i, j = args.bond
    low, high = args.window or (-np.inf, np.inf)
    for k in range(0, len(steps), args.every):
        if not low <= times[int(steps[k])] <= high:
            continue
        geometry = positions[k, args.trajectory]
        run = recorded[int(steps[k])]
        print(f"t = {times[int(steps[k])]:.1f} fs, r({i},{j}) = {np.linalg.norm(geometry[i] - geometry[j]) * BOHR_IN_ANGSTROM:.2f} A"
              f"; the run's S1.. - S0 {np.round((run[1:] - run[0]) * HARTREE_IN_EV, 2)} eV", flush=True)
        for spec, setting in zip(args.specs, settings):
            try:
                energies, occupations = sa_casscf_states(numbers, geometry, setting)
            except ExsnnError as exc:
                print(f"  {spec}: failed: {exc}", flush=True)
                continue
            print(f"  {spec}: S1.. - S0 {np.round((energies[1:] - energies[0]) * HARTREE_IN_EV, 2)} eV; natural occupations "
                  f"{np.round(occupations, 3)}", flush=True)


if __name__ == "__main__":
    main()
