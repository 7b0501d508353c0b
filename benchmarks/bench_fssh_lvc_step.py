"""Step time of the FSSH engine on the SO2 LVC model (3 singlets) for 1, 100 and 10,000 trajectories.

Wigner-sampled trajectories start on S2 with EDC decoherence and automatic electronic substeps (each trajectory its
own number); the time per step is averaged over --steps steps after one warm-up step. Also reports the share of a
step spent in the potential (energies, active-state forces, NACs), which measures the engine's own overhead.
Threads: torch 1 (--threads).

    .venv/bin/python benchmarks/bench_fssh_lvc_step.py [--steps 50]   # needs ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.dynamics.settings import FSSHSettings
from exsnn.potentials.lvc import LVCPotential
from exsnn.units import FS_IN_AU_TIME

TEMPLATE = Path(__file__).resolve().parents[2] / "shared" / "data" / "schnarc" / "lvc_so2_3s" / "LVC.template"


class TimedPotential:
    """Wraps a potential and adds up the time spent in it."""

    def __init__(self, potential: LVCPotential) -> None:
        self.inner, self.seconds = potential, 0.0

    def __getattr__(self, name: str):  # n_states, masses, numbers, device, ...
        return getattr(self.inner, name)

    def compute(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner.compute(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    potential = LVCPotential(TEMPLATE, device=args.device)
    print(f"SO2 LVC, dt = 0.5 fs, EDC, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'trajectories':>12s} {'ms/step':>10s} {'us/traj-step':>13s} {'potential share':>16s}")
    for n in (1, 100, 10_000):
        timed = TimedPotential(potential)
        engine = FSSHEngine(timed, FSSHSettings(dt=0.5 * FS_IN_AU_TIME, n_steps=args.steps + 1, seed=1))  # type: ignore[arg-type]
        positions, velocities = wigner_harmonic(*potential.harmonic_modes(), n, seed=2)
        state = engine.initial_state(positions, velocities, torch.full((n,), 2))
        engine.step(state)
        timed.seconds = 0.0
        start = time.perf_counter()
        for _ in range(args.steps):
            engine.step(state)
        if args.device != "cpu":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / args.steps
        print(f"{n:12d} {per_step * 1e3:10.3f} {per_step / n * 1e6:13.2f} {timed.seconds / args.steps / per_step:15.0%}")


if __name__ == "__main__":
    main()
