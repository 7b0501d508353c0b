"""`exsnn scatter`: FSSH scattering ensembles on Tully's models, with reflection/transmission probabilities."""

from __future__ import annotations

import argparse
import math
import time

from exsnn.cli.output import print_json
from exsnn.dynamics.settings import FRUSTRATED_CHOICES, FSSHSettings, default_of  # no torch: cheap at start-up
from exsnn.errors import ConfigurationError

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
    p.add_argument("--decoherence", help="decoherence scheme (exsnn.dynamics.decoherence.SCHEMES: none, edc, ...; "
                   "default: none, as Tully's FSSH)")
    p.add_argument("--frustrated", choices=FRUSTRATED_CHOICES, default=default_of(FSSHSettings, "frustrated"),
                   help="frustrated hops (default %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def check_options(args: argparse.Namespace) -> None:
    """ConfigurationError naming the option for impossible values (before any work)."""
    from exsnn.dynamics.decoherence import SCHEMES

    if not args.momentum > 0 or not math.isfinite(args.momentum):
        raise ConfigurationError(
            f"must be positive (the particle starts on the left moving right), got {args.momentum:g}",
            source="--momentum",
        )
    if args.ntraj < 1:
        raise ConfigurationError(f"must be at least 1, got {args.ntraj}", source="--ntraj")
    if args.dt is not None and (not args.dt > 0 or not math.isfinite(args.dt)):
        raise ConfigurationError(f"must be positive, got {args.dt:g}", source="--dt")
    if not 0 <= args.seed < 2**64:
        raise ConfigurationError(f"must be an integer in [0, 2**64), got {args.seed}", source="--seed")
    if args.decoherence is not None and args.decoherence not in SCHEMES:
        raise ConfigurationError(
            f"unknown scheme {args.decoherence!r}; expected one of {sorted(SCHEMES)}", source="--decoherence"
        )


def run(args: argparse.Namespace) -> int:
    from exsnn.dynamics.scattering import OUTCOMES, run_scattering

    check_options(args)
    options = {"frustrated": args.frustrated}
    if args.decoherence is not None:
        options["decoherence"] = args.decoherence
    start = time.perf_counter()
    result = run_scattering(
        args.model,
        args.momentum,
        args.ntraj,
        seed=args.seed,
        dt=args.dt,
        sampling=args.sampling,
        device=args.device,
        **options,
    )
    elapsed = time.perf_counter() - start
    if args.json:
        print_json({**result.as_dict(), "model": args.model, "momentum": args.momentum, "seed": args.seed,
                    "seconds": elapsed})
        return 0
    print(
        f"{args.model}, k = {args.momentum:g} a.u., {args.ntraj} trajectories, seed {args.seed}, dt = {result.settings['dt']:.3g} a.u."
    )
    for key in OUTCOMES:
        print(f"  {key:8s} {result.probabilities[key]:.4f} +/- {result.errors[key]:.4f}")
    if result.n_failed or result.n_unfinished:
        print(f"  failed (energy drift): {result.n_failed}; still inside the box at the end: {result.n_unfinished}")
    print(f"  {elapsed:.2f} s")
    return 0
