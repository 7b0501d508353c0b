"""Why a campaign's populations miss the oracle's (issue #14): three diagnostics on an exact oracle (SO2 LVC).

    python benchmarks/diagnose_campaign.py populations CAMPAIGN_DIR [--last] [--members] [--nac-epsilon 1e-5]
        max|dP| and S1 at the end, against FSSH on the oracle, of each iteration's committee (and members)
    python benchmarks/diagnose_campaign.py crossing CAMPAIGN_DIR MODEL [MODEL ...]
        along oracle trajectories, at frames with an oracle S2-S1 gap < 0.3 eV: |cos| of model and oracle d12, the ratio
        of their sizes, the gap error and the ratio of sum |d12 . v| (the coupling that makes the hops)
    python benchmarks/diagnose_campaign.py retrain CAMPAIGN_DIR OUT [--members 2] [--weight nacs=4] [--energy-cap-ev 6.5]
        [--epochs N]
        members trained from scratch on the campaign's labels (its first-iteration settings and split), and their
        populations against the oracle

The oracle reference and its initial conditions are those of `bench_campaign.py` (0 K Wigner, a dedicated seed;
`--trajectories`, default 300); one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import model_populations, oracle_reference, populations_on  # noqa: E402

from exsnn.active.config import committee_architecture  # noqa: E402
from exsnn.active.train import campaign_split  # noqa: E402
from exsnn.data.splits import save_split  # noqa: E402
from exsnn.dynamics.fssh import FSSHEngine  # noqa: E402
from exsnn.dynamics.settings import FSSHSettings  # noqa: E402
from exsnn.errors import ExsnnError  # noqa: E402
from exsnn.model.potential import ModelPotential  # noqa: E402
from exsnn.model.training import TrainingConfig, train  # noqa: E402
from exsnn.units import FS_IN_AU_TIME, HARTREE_IN_EV  # noqa: E402


def report(name: str, populations: np.ndarray, reference: np.ndarray) -> None:
    print(f"{name}: max|dP| {np.abs(populations - reference).max():.3f}, S1 at the end {populations[-1, 1]:.2f} "
          f"(oracle {reference[-1, 1]:.2f})", flush=True)


def populations(args: argparse.Namespace) -> None:
    config, oracle, ics, reference = oracle_reference(str(args.campaign / "campaign.toml"), args.trajectories)
    iterations = sorted(args.campaign.glob("iteration_*"))
    for folder in iterations[-1:] if args.last else iterations:
        models = [folder / "committee"] + (sorted((folder / "committee").glob("member_*")) if args.members else [])
        for model in models:
            potential = ModelPotential(model, oracle.numbers.numpy(), dtype=torch.float64, driver=config.dynamics.driver)
            for network in potential.networks:
                network.config.nac_epsilon = args.nac_epsilon or network.config.nac_epsilon
            report(f"{folder.name} {model.name}", populations_on(potential, *ics, config), reference)


def crossing(args: argparse.Namespace) -> None:
    config, oracle, ics, _ = oracle_reference(str(args.campaign / "campaign.toml"), args.trajectories)
    d = config.dynamics
    n_steps = int(round(d.duration_fs / d.dt_fs))
    engine = FSSHEngine(oracle, FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=n_steps, seed=1))
    state = engine.initial_state(*ics, torch.full((len(ics[0]),), d.initial_state))
    positions, velocities = [], []
    while state.step < n_steps:
        engine.step(state)
        if state.step % 2 == 0:  # every 1 fs at 0.5 fs steps
            positions.append(state.positions.clone())
            velocities.append(state.velocities.clone())
    P, V = torch.cat(positions), torch.cat(velocities)
    truth = oracle.compute(P, nacs=True)
    gap = (truth.energies[:, 2] - truth.energies[:, 1]) * HARTREE_IN_EV
    near = gap < 0.3
    pair = 2  # pairs 01, 02, 12
    for model in args.models:
        out = ModelPotential(model, oracle.numbers.numpy(), dtype=torch.float64).compute(P, nacs=True)
        a, b = out.nacs[:, pair].reshape(len(P), -1), truth.nacs[:, pair].reshape(len(P), -1)
        cos = (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1))
        model_gap = (out.energies[:, 2] - out.energies[:, 1]) * HARTREE_IN_EV
        coupling = (out.nacs[:, pair] * V).sum((1, 2)).abs()[near].sum() / (truth.nacs[:, pair] * V).sum((1, 2)).abs()[near].sum()
        print(f"{model}: {int(near.sum())} frames near the crossing: |cos| median {cos[near].median():.3f}, |d12| ratio "
              f"median {(a.norm(dim=1) / b.norm(dim=1))[near].median():.3f}, gap error median {(model_gap - gap)[near].median():+.3f} eV, "
              f"sum |d12 . v| ratio {coupling:.3f}", flush=True)


def retrain(args: argparse.Namespace) -> None:
    config, oracle, ics, reference = oracle_reference(str(args.campaign / "campaign.toml"), args.trajectories)
    weights = {name: float(value) for name, value in (item.split("=") for item in args.weight)}
    data = args.campaign / "data.h5"
    split = campaign_split(data, seed=1)
    c = config.committee
    # every member's settings are checked (ConfigurationError naming the field) before anything is written
    members = [TrainingConfig(data=str(data), output=str(args.output / f"member_{k}"), recipe=c.recipe,
                              network=committee_architecture(c), batch_size=c.batch_size, learning_rate=c.learning_rate,
                              max_epochs=args.epochs or c.epochs, patience=max(20, c.warm_epochs // 2), seed=100 + k,
                              threads=1, progress_bar=False, accelerator="cpu", weights=weights or None,
                              energy_cap_ev=args.energy_cap_ev) for k in range(args.members)]
    for member in members:
        Path(member.output).mkdir(parents=True, exist_ok=True)
        save_split(split, Path(member.output) / "split.npz")
        train(member)
        report(f"{member.output} (weights {weights or 'of the recipe'}, energy cap {args.energy_cap_ev} eV)",
               model_populations(Path(member.output), oracle, ics, config), reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=300)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("populations")
    p.add_argument("campaign", type=Path)
    p.add_argument("--last", action="store_true")
    p.add_argument("--members", action="store_true")
    p.add_argument("--nac-epsilon", type=float)
    p = sub.add_parser("crossing")
    p.add_argument("campaign", type=Path)
    p.add_argument("models", type=Path, nargs="+")
    p = sub.add_parser("retrain")
    p.add_argument("campaign", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--weight", action="append", default=[], help="NAME=VALUE loss weight (nacs, diabatic_couplings, ...)")
    p.add_argument("--energy-cap-ev", type=float, help="energy window: labels of states this far above the lowest count less")
    p.add_argument("--epochs", type=int, help="instead of the campaign's first-iteration epochs")
    args = parser.parse_args()
    try:
        {"populations": populations, "crossing": crossing, "retrain": retrain}[args.command](args)
    except ExsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ValueError as exc:  # a --weight without '='
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
