"""`exsnn scatter`: FSSH scattering ensembles on Tully's models, with reflection/transmission probabilities."""

from __future__ import annotations

import argparse
import json
import time

MODEL_NAMES = ("tully1", "tully2", "tully3")  # exsnn.potentials.tully.TULLY_MODELS (imported lazily: torch is slow to load)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("scatter", help="FSSH scattering on Tully's models: reflection/transmission per state")
    p.add_argument("--model", choices=MODEL_NAMES, required=True)
    p.add_argument("--momentum", type=float, required=True, help="initial momentum k (atomic units)")
    p.add_argument("--ntraj", type=int, default=2000, help="number of trajectories (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dt", type=float, help="time step (atomic units; default: moves the particle ~0.025 Bohr, at most 5)")
    p.add_argument("--sampling", choices=("wigner", "fixed"), default="wigner",
                   help="initial conditions: Wigner sampling of the Gaussian wavepacket (default) or all at (x0, k)")
    p.add_argument("--decoherence", choices=("none", "edc"), default="none")
    p.add_argument("--frustrated", choices=("keep", "reflect", "reflect_gradv"), default="keep")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from exsnn.dynamics.scattering import OUTCOMES, run_scattering

    if args.ntraj < 1:
        raise ValueError("--ntraj must be at least 1")
    start = time.perf_counter()
    result = run_scattering(
        args.model, args.momentum, args.ntraj, seed=args.seed, dt=args.dt, sampling=args.sampling,
        device=args.device, decoherence=args.decoherence, frustrated=args.frustrated,
    )
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({**result.as_dict(), "model": args.model, "momentum": args.momentum, "seed": args.seed, "seconds": elapsed}))
        return 0
    print(f"{args.model}, k = {args.momentum:g} a.u., {args.ntraj} trajectories, seed {args.seed}, dt = {result.settings['dt']:.3g} a.u.")
    for key in OUTCOMES:
        print(f"  {key:8s} {result.probabilities[key]:.4f} +/- {result.errors[key]:.4f}")
    if result.n_failed or result.n_unfinished:
        print(f"  failed (energy drift): {result.n_failed}; still inside the box at the end: {result.n_unfinished}")
    print(f"  {elapsed:.2f} s")
    return 0
