"""Lifetimes from a surface-hopping run: populations with bootstrap bands, a kinetic fit with bootstrap errors,
hop statistics, energy diagnostics and exports (shnitsel-tools NetCDF, ASE trajectories).

Runs the SO2 LVC ensemble of dynamics/so2_lvc.toml (../shared/data) when no run file is given, then analyses it.

    .venv/bin/python examples/lifetimes_from_run.py [RUN.h5] [--model "S2->S1, S1->S0"] [--output exsnn-output/so2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exsnn.analysis import analyze_run

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run file of exsnn dynamics (default: run dynamics/so2_lvc.toml)")
    parser.add_argument("--model", default="sequential", help="kinetic model: sequential or steps such as 'S2->S1, S1->S0'")
    parser.add_argument("--fit", default="classical", choices=("classical", "quantum"))
    parser.add_argument("--output", default="exsnn-output/so2")
    parser.add_argument("--shnitsel", action="store_true", help="also export for shnitsel-tools (needs xarray, h5netcdf)")
    args = parser.parse_args()
    run = Path(args.run) if args.run else None
    if run is None:
        from exsnn.dynamics.config import load_config
        from exsnn.dynamics.ensemble import run_ensemble

        config = load_config(PROJECT / "dynamics" / "so2_lvc.toml")
        run = config.output
        if not run.exists():
            run_ensemble(config)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = analyze_run(run, out / run.stem, kinetic_model=args.model, fit_to=args.fit,
                         shnitsel=out / "shnitsel" if args.shnitsel else None, ase=out / "ase")
    print(f"{len(result['trajectories_used'])} trajectories used, {len(result['trajectories_excluded'])} excluded")
    for label, value in result["lifetimes"].items():
        low, high = value["interval_fs"]
        print(f"  {label}: tau = {value['tau_fs']:.1f} +- {value['error_fs']:.1f} fs "
              f"({result['confidence']:.0%} interval {low:.1f} to {high:.1f} fs)")
    hops = result["hops"]
    print(f"  hops: {hops['accepted']} accepted {hops['per_pair']}, {hops['frustrated']} frustrated")
    for label, path in result["files"].items():
        print(f"  {label}: {path}")


if __name__ == "__main__":
    main()
