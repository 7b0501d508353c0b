"""Where an SO2 LVC committee's population error comes from: surfaces or couplings, sign tracking or the NACs
themselves, and how accurate the committee is along the oracle's own trajectories.

For each committee folder (a campaign iteration's `committee/` or any exsnn committee on the SO2 LVC model):
* max over time of |P_S1(model) - P_S1(oracle)| of FSSH from the same 0 K Wigner initial conditions and random numbers
  (0.5 fs, 20 fs, from S2, as `bench_campaign.py`) for: the committee; its surfaces with the oracle's NACs; the
  oracle's surfaces with its NACs; the oracle's surfaces and state vectors with its NACs signed to match the oracle's
  (no sign tracking left in the comparison: only the NACs' size and direction);
* along the oracle's own trajectories every 4 fs: energy MAE per state (meV), S2-S1 gap error (meV) and the
  phase-free NAC12 error (1/Bohr, mean over components) of each member;
* the coupling that drives S2 -> S1 where it happens: over every step of the oracle's trajectories in the first 10 fs
  with an S2-S1 gap below 0.2 eV, sum |v . d12(model)| / sum |v . d12(oracle)| (1 when the learned NACs carry the
  oracle's nonadiabatic coupling along the real paths; below 1: too few hops).

    .venv/bin/python benchmarks/diagnose_so2_populations.py COMMITTEE [COMMITTEE ...] [--trajectories 400]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import ROOT  # noqa: E402
from bench_population_ceiling import MixedPotential  # noqa: E402

from exsnn.dynamics.fssh import FSSHEngine, FSSHSettings  # noqa: E402
from exsnn.dynamics.initial_conditions import wigner_harmonic  # noqa: E402
from exsnn.model.potential import ModelPotential  # noqa: E402
from exsnn.potentials.base import Potential, PotentialOutput  # noqa: E402
from exsnn.potentials.spec import load_potential  # noqa: E402
from exsnn.units import FS_IN_AU_TIME  # noqa: E402

HARTREE_IN_MEV = 27211.386
STEPS = 40  # 20 fs at 0.5 fs


class OracleSignedNacs(Potential):
    """The oracle's surfaces and state vectors with a model's NACs, each pair signed to agree with the oracle's NAC."""

    def __init__(self, model: Potential, oracle: Potential) -> None:
        self.model, self.oracle = model, oracle
        self.n_states, self.numbers, self.masses = oracle.n_states, oracle.numbers, oracle.masses

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False,
                nacs: bool = True, trajectories: torch.Tensor | None = None) -> PotentialOutput:
        out = self.oracle.compute(positions, states, all_forces, nacs, trajectories)
        if nacs:
            learned = self.model.compute(positions, None, False, nacs=True, trajectories=trajectories).nacs
            agree = (learned * out.nacs).sum((-1, -2), keepdim=True) >= 0
            out.nacs = torch.where(agree, learned, -learned)
        return out


def run(potential: Potential, positions: torch.Tensor, velocities: torch.Tensor, snapshots: bool = False):
    """Active states (T + 1, B) of FSSH from S2 and, with `snapshots`, the positions every 4 fs and the positions and
    velocities of every step of the first 10 fs (concatenated)."""
    engine = FSSHEngine(potential, FSSHSettings(dt=0.5 * FS_IN_AU_TIME, n_steps=STEPS, seed=12345))
    state = engine.initial_state(positions, velocities, torch.full((len(positions),), 2))
    active, frames, early = [state.active.numpy().copy()], [], []
    while state.step < STEPS:
        engine.step(state)
        active.append(state.active.numpy().copy())
        if snapshots and state.step % 8 == 0:
            frames.append((state.step * 0.5, state.positions.clone()))
        if snapshots and state.step <= STEPS // 2:
            early.append((state.positions.clone(), state.velocities.clone()))
    moving = (torch.cat([p for p, _ in early]).double(), torch.cat([v for _, v in early]).double()) if early else None
    return np.array(active), frames, moving


def coupling_rate(potential: Potential, positions: torch.Tensor, velocities: torch.Tensor) -> np.ndarray:
    """|v . d12| (B,) at the given positions and velocities."""
    return np.abs((potential.compute(positions, nacs=True).nacs[:, 2].detach() * velocities).sum((-1, -2)).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("committees", nargs="+", type=Path)
    parser.add_argument("--trajectories", type=int, default=400)
    parser.add_argument("--oracle", default=str(ROOT.parent / "shared" / "data" / "schnarc" / "lvc_so2_3s" / "LVC.template"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    oracle = load_potential(f"lvc:{args.oracle}")
    positions, velocities = wigner_harmonic(*oracle.harmonic_modes(), args.trajectories, seed=987654)  # type: ignore[attr-defined]
    active, frames, (early_positions, early_velocities) = run(oracle, positions, velocities, snapshots=True)
    early_gap = np.diff(oracle.compute(early_positions).energies[:, 1:].numpy(), axis=1)[:, 0] * HARTREE_IN_MEV
    small = early_gap < 200.0
    oracle_rate = coupling_rate(oracle, early_positions, early_velocities)[small].sum()
    reference = (active == 1).mean(1)
    print(f"oracle, {args.trajectories} trajectories: S1 at 4 / 8 / 20 fs {reference[8]:.2f} / {reference[16]:.2f} / "
          f"{reference[40]:.2f}")
    labels = [oracle.compute(p.double(), all_forces=True, nacs=True) for _, p in frames]
    for folder in args.committees:
        committee = ModelPotential(folder, oracle.numbers.numpy(), dtype=torch.float64)
        variants = [("committee", committee), ("its surfaces + oracle NACs", MixedPotential(committee, oracle)),
                    ("oracle surfaces + its NACs", MixedPotential(oracle, committee)),
                    ("oracle surfaces + its NACs with the oracle's signs", OracleSignedNacs(committee, oracle))]
        for label, potential in variants:
            s1 = (run(potential, positions, velocities)[0] == 1).mean(1)
            print(f"{folder}: {label}: max|dP_S1| = {np.abs(s1 - reference).max():.3f}", flush=True)
        rate = coupling_rate(committee, early_positions, early_velocities)[small].sum() / oracle_rate
        print(f"{folder}: sum |v . d12| at oracle S2-S1 gaps < 0.2 eV in the first 10 fs, committee / oracle = {rate:.2f} "
              f"({small.sum()} steps)", flush=True)
        for member in json.loads((folder / "committee.json").read_text())["members"]:
            model = ModelPotential((folder / member).parent, oracle.numbers.numpy(), dtype=torch.float64)
            row = []
            for (time_fs, p), label in zip(frames, labels):
                out = model.compute(p.double(), all_forces=True, nacs=True)
                e, r = out.energies.detach().numpy(), label.energies.numpy()
                energy = (np.abs(e - r).mean(0) * HARTREE_IN_MEV).round().astype(int).tolist()
                gap = np.abs((e[:, 2] - e[:, 1]) - (r[:, 2] - r[:, 1])).mean() * HARTREE_IN_MEV
                q = out.nacs[:, 2].detach().reshape(len(p), -1).numpy()
                t = label.nacs[:, 2].reshape(len(p), -1).numpy()
                nac = np.minimum(np.abs(q - t).mean(1), np.abs(q + t).mean(1)).mean()
                row.append(f"{time_fs:g} fs: E {energy} gap {gap:.0f} d12 {nac:.2f}")
            print(f"  {member}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
