"""How often the campaign's population-agreement rule calls two iterations different when they are not (issue #14).

Two iterations of a campaign that had reached the truth would run the same potential from fresh initial conditions
with their own hop random numbers. Here both run on the exact oracle (SchNarc's SO2 LVC model, the shipped campaign's
`[dynamics]`: 200 trajectories, 20 fs at 0.5 fs), iteration i against i + 1 for `--pairs` pairs, and
`exsnn.active.decide.decide` compares their populations with the pointwise rule (z standard errors at every state and
time) and with the simultaneous band (`[stopping] simultaneous`, the default). A rule that calls identical dynamics
different at a high rate keeps an accurate committee's campaign going until its iteration limit.

    .venv/bin/python benchmarks/bench_stopping_rule.py [--pairs 20] [--config dynamics/campaign_so2_lvc.toml]

Measured 2026-12-07 (20 pairs): pointwise z = 2 says "different" in 0.40 of the pairs, z = 3 in 0.05; the simultaneous
band (z = 2 coverage, critical value 2.7-3.1 standard errors) in 0.10.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from exsnn.active.config import CampaignConfig, StoppingConfig, load_config
from exsnn.active.decide import decide
from exsnn.active.sample import dynamics_initial_conditions
from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.settings import FSSHSettings
from exsnn.potentials.base import Potential
from exsnn.potentials.spec import load_potential
from exsnn.units import FS_IN_AU_TIME

PROJECT = Path(__file__).resolve().parents[1]


def oracle_record(config: CampaignConfig, oracle: Potential, iteration: int) -> dict[str, np.ndarray]:
    """The record `decide` reads (active states (T, B), status, time_fs) of FSSH on the oracle from the campaign's
    initial conditions of `iteration`, with that iteration's hop seed."""
    d = config.dynamics
    n_steps = int(round(d.duration_fs / d.dt_fs))
    positions, velocities = dynamics_initial_conditions(config, oracle, iteration)
    engine = FSSHEngine(oracle, FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=n_steps,
                                             seed=config.run.seed * 1000 + iteration))
    state = engine.initial_state(positions, velocities, torch.full((len(positions),), d.initial_state))
    active = [state.active.numpy().copy()]
    while state.step < n_steps:
        engine.step(state)
        active.append(state.active.numpy().copy())
    active_array = np.array(active)
    return {"active": active_array, "status": np.zeros_like(active_array), "time_fs": np.arange(n_steps + 1) * d.dt_fs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--config", type=Path, default=PROJECT / "dynamics" / "campaign_so2_lvc.toml")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    oracle = load_potential(config.oracle_spec())
    records = [oracle_record(config, oracle, i) for i in range(args.pairs + 1)]
    print(f"{args.pairs} pairs of {config.dynamics.n_trajectories}-trajectory ensembles on the oracle "
          f"({config.oracle.spec}), {config.dynamics.duration_fs:g} fs")
    for z, simultaneous in ((2.0, False), (3.0, False), (2.0, True)):
        rule = StoppingConfig(z=z, simultaneous=simultaneous, max_iterations=10**6, label_budget=10**9)
        decisions = [decide(records[i + 1], records[i], oracle.n_states, 1, 0, rule)
                     for i in range(args.pairs)]
        different = np.mean([d.population_gap > 0 for d in decisions])
        critical = np.array([d.population_critical for d in decisions])
        name = f"simultaneous band, z = {z:g} coverage" if simultaneous else f"pointwise, z = {z:g}"
        print(f"{name}: called different in {different:.2f} of the pairs (critical value {critical.min():.2f}-"
              f"{critical.max():.2f} standard errors)", flush=True)


if __name__ == "__main__":
    main()
