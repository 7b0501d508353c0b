"""exsnn's batched FSSH against mudslide on the same Tully model, time step and initial conditions.

Measures, in one process (torch threads: 1 unless --threads):
  * exsnn in-process: `run_scattering` on N trajectories (default 20,000);
  * exsnn through the CLI: `exsnn scatter ... --ntraj N --json`, wall time with interpreter start-up;
  * mudslide (`pip install mudslide`): SurfaceHoppingMD one trajectory after another on the first M of the same
    initial conditions (mudslide runs trajectories independently, so its time per trajectory does not depend on N);
and prints the probabilities of both with binomial errors, the exact quantum result, and the throughput ratios.

    .venv/bin/python benchmarks/bench_fssh_vs_mudslide.py [--ntraj 20000] [--mudslide-ntraj 40] [--momentum 20]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import torch

from exsnn.dynamics.scattering import default_start, default_time_step, run_scattering, sample_initial_conditions
from exsnn.potentials.tully import TULLY_MODELS
from exsnn.validation.wavepacket import exact_scattering

MUDSLIDE_MODELS = {
    "tully1": "TullySimpleAvoidedCrossing",
    "tully2": "TullyDualAvoidedCrossing",
    "tully3": "TullyExtendedCouplingReflection",
}


def run_mudslide(model: str, momentum: float, n: int, seed: int, dt: float) -> tuple[float, dict[str, float]]:
    import mudslide.models
    from mudslide.surface_hopping_md import SurfaceHoppingMD

    potential = getattr(mudslide.models, MUDSLIDE_MODELS[model])()
    mass = float(potential.mass[0])
    x0, _ = default_start(momentum)
    positions, velocities = sample_initial_conditions(n, momentum, mass, seed)
    counts = {"R_lower": 0, "T_lower": 0, "R_upper": 0, "T_upper": 0}
    start = time.perf_counter()
    for k in range(n):
        trajectory = SurfaceHoppingMD(
            potential,
            [float(positions[k, 0, 0])],
            [float(velocities[k, 0, 0])],
            0,
            dt=dt,
            bounds=[[x0], [-x0]],
            seed_sequence=seed * 100_000 + k,
        )
        trajectory.simulate()
        side = "T" if trajectory.position[0] > 0 else "R"
        counts[f"{side}_{'upper' if trajectory.state == 1 else 'lower'}"] += 1
    elapsed = time.perf_counter() - start
    return elapsed / n, {key: value / n for key, value in counts.items()}


def error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MUDSLIDE_MODELS), default="tully1")
    parser.add_argument("--momentum", type=float, default=20.0)
    parser.add_argument("--ntraj", type=int, default=20_000)
    parser.add_argument("--mudslide-ntraj", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dt = default_time_step(args.momentum, 2000.0)

    start = time.perf_counter()
    ours = run_scattering(args.model, args.momentum, args.ntraj, seed=args.seed, dt=dt)
    ours_per_traj = (time.perf_counter() - start) / args.ntraj

    start = time.perf_counter()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "exsnn.cli.main",
            "scatter",
            "--model",
            args.model,
            "--momentum",
            str(args.momentum),
            "--ntraj",
            str(args.ntraj),
            "--seed",
            str(args.seed),
            "--dt",
            str(dt),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": str(args.threads)},
    )
    cli_per_traj = (time.perf_counter() - start) / args.ntraj
    cli_result = json.loads(cli.stdout)

    mudslide_per_traj, mudslide_p = run_mudslide(args.model, args.momentum, args.mudslide_ntraj, args.seed, dt)
    exact = exact_scattering(TULLY_MODELS[args.model], args.momentum).as_dict()

    print(
        f"{args.model}, k = {args.momentum:g} a.u., dt = {dt:.3g} a.u., Wigner-sampled wavepacket, no decoherence; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'outcome':9s} {'exsnn (N=' + str(args.ntraj) + ')':>22s} {'mudslide (N=' + str(args.mudslide_ntraj) + ')':>22s} {'exact':>8s}"
    )
    for key in ("R_lower", "T_lower", "R_upper", "T_upper"):
        p, q = ours.probabilities[key], mudslide_p[key]
        print(
            f"{key:9s} {p:14.4f} +/- {ours.errors[key]:.4f} {q:14.4f} +/- {error(q, args.mudslide_ntraj):.4f} {exact[key]:8.4f}"
        )
    assert cli_result["T_upper"] == ours.probabilities["T_upper"], "CLI and in-process runs must agree"
    print(
        f"time per trajectory: exsnn in-process {ours_per_traj * 1e6:9.1f} us | exsnn CLI (start-up included) "
        f"{cli_per_traj * 1e6:9.1f} us | mudslide {mudslide_per_traj * 1e6:9.1f} us"
    )
    print(
        f"throughput ratio vs mudslide: in-process {mudslide_per_traj / ours_per_traj:7.0f}x | CLI {mudslide_per_traj / cli_per_traj:7.0f}x"
    )


if __name__ == "__main__":
    main()
