"""Data efficiency of active learning on an exact oracle: population error against labels spent.

Oracle: SchNarc's SO2 LVC model (3 singlets, ../shared/data), where FSSH can be run on the truth. For a model M (a
committee mean) the error is max over states and times of |P_M(t) - P_oracle(t)| of the classical populations, with
both ensembles started from the same initial conditions (0 K Wigner, a dedicated seed, `--trajectories` of them) and
the same random numbers. The surfaces of a model are not the oracle's, so its trajectories decorrelate from the
oracle's after the first hops: the oracle run again with other hop random numbers (printed first) gives the floor
that statistics alone puts under max|dP| (about 0.02 at 1000 trajectories on SO2; it falls as 1/sqrt(trajectories)).
Compared at equal labels:

* the campaign (dynamics/campaign_so2_lvc.toml, or --config): the committee of every iteration;
* plain Wigner sampling: committees of the same size and training settings on N Wigner samples (the campaign's
  initial spread), for several N.

It prints both curves, the labels each needs to reach the target error (default 0.03), their ratio (goal: the
campaign needs at most a third), and the campaign's wall time per phase.

    .venv/bin/python benchmarks/bench_campaign.py [--trajectories 1000] [--budgets 30,60,120,240] [--no-campaign]

--no-campaign runs the Wigner baselines alone (for larger budgets, in a run of their own: the oracle reference and
its initial conditions depend on the config alone, so the curves of separate runs compare).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from exsnn.active.campaign import Campaign, open_campaign, start
from exsnn.active.config import CampaignConfig, load_config
from exsnn.active.decide import classical_populations
from exsnn.active.label import label_structures, oracle_metadata
from exsnn.active.sample import initial_geometries
from exsnn.active.train import train_committee
from exsnn.data.splits import load_split
from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.dynamics.settings import FSSHSettings
from exsnn.errors import ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.potentials.base import Potential
from exsnn.potentials.spec import load_potential
from exsnn.units import FS_IN_AU_TIME

ROOT = Path(__file__).resolve().parents[1]


COUPLINGS = {"nac": {}, "curvature": {"couplings": "curvature", "rescale": "velocity"}}


def populations_on(potential: Potential, positions: torch.Tensor, velocities: torch.Tensor, config,
                   couplings: str = "nac", seed: int = 12345) -> np.ndarray:
    """Classical populations (T, N) of FSSH on `potential` from the given initial conditions (no stopping); couplings
    'curvature' drives the hops by the energy gaps alone (the same way on the oracle and on the committees)."""
    d = config.dynamics
    settings = FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=int(round(d.duration_fs / d.dt_fs)), seed=seed,
                            **COUPLINGS[couplings])
    engine = FSSHEngine(potential, settings)
    state = engine.initial_state(positions, velocities, torch.full((len(positions),), d.initial_state))
    active = [state.active.numpy().copy()]
    while state.step < settings.n_steps:
        engine.step(state)
        valid = state.status.numpy() != 3  # energy-drift failures leave the average
        active.append(np.where(valid, state.active.numpy(), -1))
    return classical_populations(np.array(active), potential.n_states, n_bootstrap=2)[0]


def model_populations(model_folder: Path, oracle: Potential, ics, config, couplings: str = "nac") -> np.ndarray:
    """Classical populations (T, N) of FSSH driven by a model or committee folder from the initial conditions `ics`
    (a committee as the campaign's `[dynamics] driver` says)."""
    model = ModelPotential(model_folder, oracle.numbers.numpy(), dtype=torch.float64, driver=config.dynamics.driver)
    return populations_on(model, *ics, config, couplings)


def error(model_folder: Path, oracle: Potential, reference: np.ndarray, ics, config, couplings: str = "nac") -> float:
    """max over states and times of |P_model - P_oracle|."""
    return float(np.abs(model_populations(model_folder, oracle, ics, config, couplings) - reference).max())


def member_errors(committee: Path, oracle: Potential, reference: np.ndarray, ics, config, couplings: str) -> str:
    """Each member driving alone, and two committee estimates made from the members' own population curves: their
    mean (the populations of an ensemble whose trajectories are shared out among the members) and their pointwise
    median."""
    curves = [model_populations(m, oracle, ics, config, couplings) for m in sorted(committee.glob("member_*"))]
    alone = " ".join(f"{np.abs(c - reference).max():.3f}" for c in curves)
    mixture, median = np.abs(np.mean(curves, 0) - reference).max(), np.abs(np.median(curves, 0) - reference).max()
    return f"members alone max|dP| {alone}; mean of their populations {mixture:.3f}, median {median:.3f}"


def oracle_reference(config_path: str, trajectories: int, couplings: str = "nac"):
    """One thread; the campaign config (of a TOML file or a campaign directory), its oracle, `trajectories` 0 K Wigner
    initial conditions (a dedicated seed) and the oracle's classical populations (T, N) from them."""
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    # a campaign directory: its campaign.toml with relative paths from the folder of the file it was started from
    config = open_campaign(config_path)[1] if Path(config_path).is_dir() else load_config(config_path)
    oracle = load_potential(config.oracle_spec())
    ics = wigner_harmonic(*oracle.harmonic_modes(), trajectories, seed=987654)  # type: ignore[attr-defined]
    reference = populations_on(oracle, *ics, config, couplings)
    print(f"oracle: {trajectories} trajectories, final populations {np.round(reference[-1], 3).tolist()}")
    # the exact surfaces with other hop random numbers: a model error near this is at the metric's statistical floor
    # (SO2 diabatic config, seeds 1-5: 0.025 0.017 0.022 0.022 0.010 at 1000 trajectories, 0.011 0.014 0.015 0.008 0.010 at 4000)
    floor = np.abs(populations_on(oracle, *ics, config, couplings, seed=1) - reference).max()
    print(f"oracle against itself with other hop random numbers: max|dP| {floor:.3f} (the metric's noise floor)")
    return config, oracle, ics, reference


def run_campaign(args: argparse.Namespace, root: Path, config: CampaignConfig, oracle: Potential, reference: np.ndarray,
                 ics: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[int, float]]:
    """Run the campaign in `root`/campaign; (labels a committee was trained with, its max|dP|) per iteration."""
    started = time.perf_counter()
    start(args.config, root / "campaign")
    state = Campaign(root / "campaign").run()
    campaign_seconds = time.perf_counter() - started
    curve = []
    for entry in state.history:
        committee = root / "campaign" / f"iteration_{entry['iteration']:03d}" / "committee"
        split = load_split(committee / "member_0" / "split.npz")
        labels_used = int(sum(len(v) for v in split.values()))  # the labels this committee was trained with
        curve.append((labels_used, error(committee, oracle, reference, ics, config, args.couplings)))
        if args.members:
            print(f"  iteration {entry['iteration']}: " + member_errors(committee, oracle, reference, ics, config, args.couplings))
    print(f"campaign ({state.stopped}, {campaign_seconds:.0f} s; seconds per phase "
          + ", ".join(f"{k} {v:.0f}" for k, v in state.phase_seconds.items()) + ")")
    for labels, value in curve:
        print(f"  {labels:5d} labels  max|dP| = {value:.3f}")
    return curve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "dynamics" / "campaign_so2_lvc.toml"))
    parser.add_argument("--trajectories", type=int, default=1000)
    parser.add_argument("--budgets", default="30,60,120,240", help="Wigner baselines (empty: none)")
    parser.add_argument("--target", type=float, default=0.03)
    parser.add_argument("--couplings", choices=sorted(COUPLINGS), default="nac",
                        help="how the evaluation dynamics (oracle and committees alike) drive hops; 'curvature' takes "
                             "the learned NACs out of the comparison (a diagnostic: it is not the same physics)")
    parser.add_argument("--no-campaign", action="store_true", help="the Wigner baselines alone")
    parser.add_argument("--members", action="store_true", help="also the error of each member alone (campaign and Wigner)")
    parser.add_argument("--keep", help="run in this new folder and keep it (campaign, Wigner sets and committees)")
    args = parser.parse_args()
    if args.keep and Path(args.keep).exists():
        parser.error(f"--keep {args.keep}: exists already")
    config, oracle, ics, reference = oracle_reference(args.config, args.trajectories, args.couplings)
    with (nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()) as folder:
        root = Path(folder)
        campaign_curve = [] if args.no_campaign else run_campaign(args, root, config, oracle, reference, ics)
        wigner_curve = []
        for budget in [int(b) for b in args.budgets.split(",") if b.strip()]:
            # the same committee settings, without the seam-loop term: plain Wigner sets have no loop labels
            plain = replace(config, initial=replace(config.initial, n_frames=budget),
                            committee=replace(config.committee, seam_loop_weight=0.0))
            data = root / f"wigner_{budget}.h5"
            positions = initial_geometries(plain, oracle)
            every = max(2, int(round(1 / plain.initial.test_fraction)))
            tags = [{"iteration": 0, "index": k, "split": "test" if k % every == every - 1 else "train"} for k in range(budget)]
            label_structures(data, oracle, positions, tags, oracle_metadata(oracle, plain.oracle.spec), 64)
            folder_k = root / f"wigner_{budget}"
            train_committee(data, folder_k, None, plain, 0)
            wigner_curve.append((budget, error(folder_k / "committee", oracle, reference, ics, config, args.couplings)))
            print(f"  Wigner {budget} labels: max|dP| = {wigner_curve[-1][1]:.3f}", flush=True)
            if args.members:
                print(f"  Wigner {budget}: " + member_errors(folder_k / "committee", oracle, reference, ics, config, args.couplings))
        print("plain Wigner sampling:")
        for labels, value in wigner_curve:
            print(f"  {labels:5d} labels  max|dP| = {value:.3f}")

    def needed(curve: list[tuple[int, float]]) -> int | None:
        reached = [labels for labels, value in curve if value <= args.target]
        return min(reached) if reached else None

    ours, theirs = needed(campaign_curve), needed(wigner_curve)
    print(f"labels to reach max|dP| <= {args.target}: campaign {ours}, Wigner {theirs}"
          + (f", ratio {ours / theirs:.2f} (goal <= 0.33)" if ours and theirs else ""))


if __name__ == "__main__":
    try:
        main()
    except ExsnnError as exc:  # a bad config or oracle: the message names the file and field
        print(f"bench_campaign: {exc}", file=sys.stderr)
        sys.exit(2)
