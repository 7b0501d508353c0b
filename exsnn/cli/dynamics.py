"""`exsnn dynamics CONFIG.toml`: run (or resume) a surface-hopping ensemble; `exsnn analyze RUN.h5`: plots, tables."""

from __future__ import annotations

import argparse

from exsnn.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dynamics", help="run a surface-hopping ensemble described by a TOML file")
    p.add_argument("config", help="TOML input (see dynamics/ for ready-to-run ones)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="start again, replacing the output file")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_dynamics)

    from exsnn.cli.photo import add_analyze_options, run_analyze

    p = subparsers.add_parser("analyze", help="populations with bands, lifetimes, hops, energy diagnostics, exports of a run")
    p.add_argument("run_file", help="HDF5 file written by exsnn dynamics")
    p.add_argument("--output", help="prefix of the written files (default: next to the run file)")
    add_analyze_options(p)
    p.set_defaults(run=run_analyze)


def run_dynamics(args: argparse.Namespace) -> int:
    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.ensemble import run_ensemble

    config = load_config(args.config)
    summary = run_ensemble(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if args.json:
        print_json(summary.as_dict())
        return 0
    start = f" (resumed at step {summary.resumed_from_step})" if summary.resumed_from_step is not None else ""
    print(
        f"exsnn dynamics: {config.n_trajectories} trajectories on {config.potential_spec}, "
        f"{summary.steps} steps = {summary.time_fs:.1f} fs{start}"
    )
    print(
        "  final populations (classical, active state): "
        + "  ".join(f"S{k} {p:.3f}" for k, p in enumerate(summary.classical_populations))
    )
    print(
        "  final populations (quantum, mean |c|^2):     "
        + "  ".join(f"S{k} {p:.3f}" for k, p in enumerate(summary.quantum_populations))
    )
    print(f"  hops: {summary.hops} accepted, {summary.frustrated_hops} frustrated, {summary.forced_hops} forced to S0")
    print("  trajectories: " + ", ".join(f"{name} {count}" for name, count in summary.status_counts.items()))
    print(f"  results: {summary.output}  (exsnn analyze {summary.output} for plots)")
    return 0
