"""Do a model's states intersect where its trajectories hop, and does the reference agree? (issues #14 and #16)

From a run file's accepted hops between states I and J (`--states I J`, default 1 2) the `--hops` geometries with the
smallest gap are taken. From each, the intersection of I and J of the model that drove the hop's trajectory is
searched (the first `--model`, or with `--members-driver` member t mod K of the K models for trajectory t, as
`driver=members` runs them; L-BFGS on the squared gap, each Cartesian coordinate within `--reach` Bohr of the hop
geometry), and a loop of `--radius` Bohr in that model's branching plane there gives each
model's coupling integral (exsnn.analysis.geometric_phase: +-pi with an intersection inside the loop, 0 with none:
the states only touch, which energies, forces and sign-free couplings cannot tell). With `--reference SPEC` the
reference potential (e.g. the campaign's `pyscf:` oracle, `--points` calculations per loop) computes the same loop:
pi there too means the reference has an intersection within `--radius` of the model's.

    OMP_NUM_THREADS=1 python benchmarks/check_seam_phase.py RUN.h5 --model datasets/ch2nh2_sacasscf/committee/member_0/model.pt \\
        [--model ...] [--members-driver] [--states 1 2] [--hops 3] [--radius 0.15] [--reach 0.3] [--points 32] \\
        [--reference "pyscf:casscf(6,4)/6-31g*,states=4,charge=1,avas=C 2p;N 2p"] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from exsnn.analysis.geometric_phase import geometric_phase, potential_branching_plane
from exsnn.analysis.records import read_run
from exsnn.errors import ConfigurationError, ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.potentials.spec import load_potential
from exsnn.units import HARTREE_IN_EV


def smallest_gap_hops(run: Path, states: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions (K, n, 3) Bohr, gaps (K,) eV and trajectories (K,) of the accepted hops between `states` (either
    direction) with the smallest |gap|, and the atomic numbers."""
    records = read_run(run)
    hops = records.hops
    if "positions" not in hops or not len(hops["positions"]):
        raise ConfigurationError(f"{run}: the run file records no hop geometries", where="run file")
    pair = {tuple(sorted((int(a), int(b)))) for a, b in zip(hops["source"], hops["target"])}
    mask = ~np.asarray(hops["frustrated"], bool) & np.array(
        [tuple(sorted((int(a), int(b)))) == states for a, b in zip(hops["source"], hops["target"])])
    if not mask.any():
        raise ConfigurationError(f"{run}: no accepted hop between S{states[0]} and S{states[1]} (pairs with hops: "
                                 f"{sorted(pair)})", where="--states")
    index = np.flatnonzero(mask)[np.argsort(np.abs(np.asarray(hops["gap"])[mask]))[:n]]
    return np.asarray(hops["positions"])[index], np.asarray(hops["gap"])[index], np.asarray(hops["trajectory"])[index], records.numbers


def intersection(potential: ModelPotential, start: np.ndarray, states: tuple[int, int], reach: float) -> tuple[np.ndarray, float]:
    """The point (n, 3) Bohr of smallest gap between `states` within `reach` Bohr of `start` in every coordinate, and
    that gap (eV)."""
    i, j = states

    def squared_gap(x: np.ndarray) -> tuple[float, np.ndarray]:
        out = potential.compute(torch.as_tensor(x.reshape(1, *start.shape)), all_forces=True, nacs=False)
        gap = float(out.energies[0, j] - out.energies[0, i])
        gradient = (out.all_forces[0, i] - out.all_forces[0, j]).detach().numpy().ravel()  # type: ignore[index]
        return gap * gap, 2 * gap * gradient

    bounds = [(x - reach, x + reach) for x in start.ravel()]
    found = minimize(squared_gap, start.ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 500, "gtol": 1e-12})
    return found.x.reshape(start.shape), float(np.sqrt(max(found.fun, 0.0))) * HARTREE_IN_EV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", action="append", required=True, help="model file or committee folder (repeatable)")
    parser.add_argument("--states", type=int, nargs=2, default=(1, 2), metavar=("I", "J"))
    parser.add_argument("--hops", type=int, default=3)
    parser.add_argument("--members-driver", action="store_true",
                        help="the models are the K members of a committee run with driver=members: trajectory t's")
    parser.add_argument("--radius", type=float, default=0.15, help="Bohr")
    parser.add_argument("--reach", type=float, default=0.3, help="Bohr: how far the intersection search may move")
    parser.add_argument("--points", type=int, default=32, help="points per loop")
    parser.add_argument("--reference", help="potential spec of the reference (e.g. the campaign's pyscf: oracle)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    states = tuple(sorted(args.states))
    if states[0] == states[1] or args.hops < 1 or not args.radius > 0 or not args.reach > 0 or args.points < 8:
        raise ConfigurationError("need two different states, --hops >= 1, --radius > 0, --reach > 0 and --points >= 8",
                                 where="arguments")
    starts, gaps, trajectories, numbers = smallest_gap_hops(args.run, states, args.hops)  # type: ignore[arg-type]
    models = [ModelPotential(m, numbers, dtype=torch.float64) for m in args.model]
    reference = load_potential(args.reference, numbers=numbers) if args.reference else None
    results = []
    for k, (start, gap, trajectory) in enumerate(zip(starts, gaps, trajectories)):
        driver = int(trajectory) % len(models) if args.members_driver else 0
        center, model_gap = intersection(models[driver], start, states, args.reach)  # type: ignore[arg-type]
        plane = potential_branching_plane(models[driver], center, states)  # type: ignore[arg-type]
        moved = float(np.linalg.norm(center - start))
        print(f"hop {k} (trajectory {int(trajectory)}): gap {gap:.3f} eV; {args.model[driver]}'s smallest gap "
              f"{model_gap * 1000:.1f} meV, {moved:.3f} Bohr away", flush=True)
        entry = {"trajectory": int(trajectory), "driver": args.model[driver], "hop_gap_ev": float(gap),
                 "model_gap_ev": model_gap, "moved_bohr": moved, "loops": {}}
        named = list(zip(args.model, models)) + ([(args.reference, reference)] if reference is not None else [])
        for name, potential in named:
            loop = geometric_phase(potential, center, states, args.radius, n_points=args.points, plane=plane)  # type: ignore[arg-type]
            entry["loops"][name] = {"integral_rad": loop.integral, "encloses": loop.encloses, "closure": loop.closure,
                                    "gap_ev": [loop.smallest_gap_ev, loop.largest_gap_ev]}
            print(f"  {name}: {loop.integral:+.3f} rad ({'an intersection inside' if loop.encloses else 'no intersection inside'}; "
                  f"gap on the loop {loop.smallest_gap_ev:.3f}-{loop.largest_gap_ev:.3f} eV, closure {loop.closure:.3f})", flush=True)
        results.append(entry)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "states": states, "radius_bohr": args.radius,
                                         "points": args.points, "hops": results}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except (ExsnnError, OSError) as exc:  # bad input: say what, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
