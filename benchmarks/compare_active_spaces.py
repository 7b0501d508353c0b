"""Two SA-CASSCF active-space choices against a reference set: excitation energies and state-average energies.

For a seeded pick of frames of a reference dataset (default: the MR-CISD(6,4)/aug-cc-pVDZ CH2NH2+ set shared with
the project), each QM spec is run without gradients; the script prints the excitation energies of both against the
reference, their mean and largest deviations, and the state-average energy of each choice per frame (a lower state
average is the better SA-CASSCF solution, since the state average is what SA-CASSCF minimises). It is how the
active orbitals of datasets/ch2nh2_sacasscf were chosen (see its data card).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_active_spaces.py --frames 8 --seed 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from exsnn.data.importers import import_file
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import HARTREE_IN_EV

DEFAULT_SPECS = ("casscf(6,4)/6-31g*,states=3,charge=1,nacs=none",
                 "casscf(6,4)/6-31g*,states=3,charge=1,nacs=none,avas=C 2p;N 2p")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="../shared/data/spainn/spainn_ch2nh2+.db")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    args = parser.parse_args()
    frames = import_file(args.reference).frames
    pick = np.random.default_rng(args.seed).choice(len(frames), args.frames, replace=False)
    averages = {}
    for spec in args.specs:
        settings = parse_qm_spec(spec)
        deviations, averages[spec] = [], {}
        start = time.perf_counter()
        for k in pick:
            frame = frames[k]
            result = label_geometry(frame.numbers, frame.positions, settings, gradients=[])
            if result.failure:
                print(f"  frame {k}: failed: {result.failure}")
                continue
            reference = (frame.energies[1:] - frame.energies[0]) * HARTREE_IN_EV
            got = (result.energies[1:] - result.energies[0]) * HARTREE_IN_EV
            deviations.append(got - reference)
            averages[spec][int(k)] = float(result.energies.mean())
            print(f"  frame {k}: reference {np.round(reference, 2)} eV, {np.round(got, 2)} eV", flush=True)
        d = np.array(deviations)
        print(f"{spec}: mean deviation {d.mean(0).round(3)} eV, largest {np.abs(d).max(0).round(3)} eV "
              f"({time.perf_counter() - start:.0f} s)\n", flush=True)
    if len(args.specs) == 2:
        a, b = args.specs
        for k in sorted(set(averages[a]) & set(averages[b])):
            difference = (averages[a][k] - averages[b][k]) * 1000
            if abs(difference) > 0.1:
                print(f"frame {k}: state averages differ by {difference:+.2f} mHartree (first minus second)")


if __name__ == "__main__":
    main()
