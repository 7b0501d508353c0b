"""Are a model's worst held-out errors label noise? Screens the labels there for other SA-CASSCF solutions.

SA-CASSCF can have several solutions at one geometry, and a campaign labels each frame from a fresh start. Where a
label sits on another solution than its neighbours' labels, a model trained on the neighbours is "wrong" there for the
label's sake, not its own. For the `--worst` held-out frames of a split (ranked by the model's energy error, mean over
states), this converges SA-CASSCF at the frame from the solutions at its `--neighbours` nearest training frames
(interatomic distances, as the campaign's diversity filter measures them; each neighbour's solution from a fresh
start, as the labeller makes it) and prints the state average and the state energies relative to S0 against the
stored label. A label with no lower solution among these starts is what the method gives there.

    OMP_NUM_THREADS=1 python benchmarks/check_label_solutions.py DATA.h5 --split SPLIT.npz --model MODEL \\
        --method "casscf(6,4)/6-31g*,states=4,charge=1,avas=C 2p;N 2p" [--worst 15] [--neighbours 3] [--json OUT]

About 10-30 s a frame for CH2NH2+ SA-4-CASSCF(6,4)/6-31G* on one core (energies only).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from exsnn.active.select import descriptor
from exsnn.data import read_frames
from exsnn.data.properties import ENERGIES
from exsnn.data.splits import load_split
from exsnn.errors import ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.qm.casscf import converge_from_orbitals, solve_sa_casscf
from exsnn.qm.scf import build_molecule, run_scf
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import HARTREE_IN_EV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the labelled dataset (exsnn HDF5)")
    parser.add_argument("--split", required=True, help="split file of the model (train/val/test indices)")
    parser.add_argument("--model", required=True, help="model or committee whose held-out errors rank the frames")
    parser.add_argument("--method", required=True, help="the labels' PySCF method spec, e.g. casscf(6,4)/6-31g*,states=4,...")
    parser.add_argument("--worst", type=int, default=15, help="how many held-out frames, worst first")
    parser.add_argument("--neighbours", type=int, default=3, help="training frames whose solutions are starts")
    parser.add_argument("--tolerance", type=float, default=0.5, help="mHartree of state average that count as another solution")
    parser.add_argument("--json", help="also write one row per frame here")
    args = parser.parse_args()
    if args.worst < 1 or args.neighbours < 1 or not args.tolerance > 0:
        parser.error("--worst and --neighbours must be >= 1 and --tolerance > 0")
    torch.set_num_threads(1)
    try:
        settings = parse_qm_spec(args.method)
        arrays = read_frames(args.data)
        split = load_split(args.split)
        labelled = np.flatnonzero(arrays.masks[ENERGIES])
        test = np.intersect1d(split["test"], labelled)
        train = np.intersect1d(split["train"], labelled)
        if len(test) == 0 or len(train) == 0:
            raise ExsnnError(f"{args.split}: no labelled test or training frames of {args.data}")
        potential = ModelPotential(args.model, arrays.frame(int(test[0])).numbers)
    except (ExsnnError, OSError, KeyError, ValueError) as exc:
        print(f"check_label_solutions.py: {exc}", file=sys.stderr)
        sys.exit(2)
    frames = {int(k): arrays.frame(int(k)) for k in np.concatenate([test, train])}
    numbers = frames[int(test[0])].numbers
    positions = torch.as_tensor(np.stack([frames[int(k)].positions for k in test]))
    reference = np.stack([frames[int(k)].energies for k in test])
    error = np.abs(potential.compute(positions).energies.detach().numpy() - reference).mean(axis=1) * HARTREE_IN_EV
    train_descriptors = descriptor(np.stack([frames[int(k)].positions for k in train]), numbers)
    neighbour_solutions: dict[int, np.ndarray | None] = {}

    def solution_at(k: int) -> np.ndarray | None:
        """Converged SA-CASSCF orbitals at training frame k from a fresh start (cached); None if it fails."""
        if k not in neighbour_solutions:
            try:
                mf, _ = run_scf(build_molecule(numbers, frames[k].positions, settings), settings)
                neighbour_solutions[k] = np.asarray(solve_sa_casscf(mf, settings)[0].mo_coeff)
            except ExsnnError:
                neighbour_solutions[k] = None
        return neighbour_solutions[k]

    rows, lower = [], 0
    for j in np.argsort(-error)[: args.worst]:
        k = int(test[j])
        stored = np.asarray(frames[k].energies)
        distances = np.linalg.norm(train_descriptors - descriptor(frames[k].positions[None], numbers), axis=1)
        mf, _ = run_scf(build_molecule(numbers, frames[k].positions, settings), settings)
        starts = {}
        for n in np.argsort(distances)[: args.neighbours]:
            orbitals = solution_at(int(train[n]))
            mc = None if orbitals is None else converge_from_orbitals(mf, settings, orbitals)
            starts[int(train[n])] = None if mc is None else np.asarray(mc.e_states, dtype=float)
        found = {n: e for n, e in starts.items() if e is not None}
        differences = {n: 1000 * (e.mean() - stored.mean()) for n, e in found.items()}
        is_lower = any(d < -args.tolerance for d in differences.values())
        lower += is_lower
        rows.append({"frame": k, "model_error_ev": float(error[j]), "stored": stored.tolist(),
                     "from_neighbours": {str(n): e.tolist() for n, e in found.items()},
                     "failed_neighbours": [n for n, e in starts.items() if e is None], "lower_solution": bool(is_lower)})
        relative = ", ".join(f"frame {n}: {d:+.2f} mHartree" for n, d in differences.items())
        print(f"frame {k} (model {error[j]:.2f} eV off; S1-S3 - S0 {np.round((stored[1:] - stored[0]) * HARTREE_IN_EV, 2)} eV): "
              f"from the solutions at {relative or 'no neighbour converged'}", flush=True)
    print(f"{len(rows)} worst held-out frames: a lower solution (by more than {args.tolerance} mHartree) at {lower}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
