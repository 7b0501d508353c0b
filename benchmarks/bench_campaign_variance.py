"""How much of a campaign's population error is training randomness? (issue #14)

Runs a campaign (default: the shipped SO2 LVC one), then compares with FSSH on the exact oracle (same 1000 Wigner
initial conditions, as benchmarks/bench_campaign.py) the populations of (a) every iteration's warm-started committee and
(b) committees trained from scratch on the campaign's final labels with different seeds. If (b) scatters as much as
(a), warm starts are not the cause and the committees are too variable for the target.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_campaign_variance.py [--config TOML] [--seeds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_campaign import ROOT, error, populations_on

from exsnn.active.campaign import Campaign, start
from exsnn.active.config import load_config
from exsnn.active.train import train_committee
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.potentials.spec import load_potential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "dynamics" / "campaign_so2_lvc.toml"))
    parser.add_argument("--trajectories", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    oracle = load_potential(config.oracle_spec())
    ics = wigner_harmonic(*oracle.harmonic_modes(), args.trajectories, seed=987654)  # type: ignore[attr-defined]
    reference = populations_on(oracle, *ics, config)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start(args.config, root / "campaign")
        state = Campaign(root / "campaign").run()
        print(f"campaign: {state.stopped} after iterations {[h['iteration'] for h in state.history]}, {state.n_labels} labels")
        for entry in state.history:
            i = entry["iteration"]
            value = error(root / "campaign" / f"iteration_{i:03d}" / "committee", oracle, reference, ics, config)
            print(f"  iteration {i} (warm-started committee): max|dP| = {value:.3f}", flush=True)
        for seed in range(args.seeds):
            out = root / f"scratch_{seed}"
            train_committee(root / "campaign" / "data.h5", out, None, config, 100 + seed)
            value = error(out / "committee", oracle, reference, ics, config)
            print(f"  from scratch on all {state.n_labels} labels, seed {seed}: max|dP| = {value:.3f}", flush=True)


if __name__ == "__main__":
    main()
