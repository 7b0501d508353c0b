"""How close can a committee trained on plentiful exact labels get to the oracle's populations?

The campaign's goal on the SO2 LVC oracle is max over states and times of |P_model(t) - P_oracle(t)| <= 0.03. This
measures the ceiling of the pipeline (network, training, ML-driven FSSH) without the campaign: committees trained on N
Wigner samples of the oracle (the campaign's initial spread) for large N, with a chosen network size and epoch budget,
evaluated exactly as `bench_campaign.py` does (same initial conditions and random numbers for oracle and model). If
the error stays well above the target at thousands of labels, the limit is not the number of labels.

    .venv/bin/python benchmarks/bench_population_ceiling.py [--frames 250,1000,2000] [--width 64 --interactions 3
        --epochs 200 --members 2] [--head diabatic] [--small-gap-weight 1] [--trajectories 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import ROOT, error, oracle_reference, populations_on  # noqa: E402

from exsnn.active.label import label_structures, oracle_metadata  # noqa: E402
from exsnn.active.sample import initial_geometries  # noqa: E402
from exsnn.active.train import train_committee  # noqa: E402
from exsnn.data.phases import pair_signs  # noqa: E402
from exsnn.model.potential import ModelPotential  # noqa: E402
from exsnn.potentials.base import Potential, PotentialOutput  # noqa: E402


class MixedPotential(Potential):
    """Energies and forces of one potential, NACs (and the state vectors that track their signs) of another: which of
    the two a population error comes from."""

    def __init__(self, surfaces: Potential, couplings: Potential) -> None:
        self.surfaces, self.couplings = surfaces, couplings
        self.n_states, self.numbers, self.masses = surfaces.n_states, surfaces.numbers, surfaces.masses

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False,
                nacs: bool = True, trajectories: torch.Tensor | None = None) -> PotentialOutput:
        out = self.surfaces.compute(positions, states, all_forces, nacs=False, trajectories=trajectories)
        if not nacs:
            return out
        other = self.couplings.compute(positions, None, False, nacs=True, trajectories=trajectories)
        return PotentialOutput(out.energies, out.forces, out.all_forces, other.nacs, out.dipoles, other.state_vectors)


class OverlapTracked(Potential):
    """The oracle without its state vectors and with random consistent state signs per call, as a network gives them:
    dynamics must then track the states' signs from the NACs' overlaps between steps (what that alone costs)."""

    def __init__(self, inner: Potential) -> None:
        self.inner, self.n_states, self.numbers, self.masses = inner, inner.n_states, inner.numbers, inner.masses
        self.calls = 0

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False,
                nacs: bool = True, trajectories: torch.Tensor | None = None) -> PotentialOutput:
        out = self.inner.compute(positions, states, all_forces, nacs, trajectories)
        out.state_vectors = None
        if out.nacs is not None:
            self.calls += 1
            generator = torch.Generator().manual_seed(self.calls)
            signs = torch.where(torch.rand(len(positions), self.n_states, generator=generator) < 0.5, -1.0, 1.0)
            out.nacs = out.nacs * pair_signs(signs.to(out.nacs.dtype), self.n_states)[:, :, None, None]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "dynamics" / "campaign_so2_lvc.toml"))
    parser.add_argument("--frames", default="250,1000,2000")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--recipe", default="exsnn-v1")
    parser.add_argument("--gap-weight", type=float, default=0.0, help="loss term on neighbouring-state gaps")
    parser.add_argument("--small-gap-weight", type=float, default=0.0,
                        help="loss term on the relative errors of those gaps (exsnn train --small-gap-weight)")
    parser.add_argument("--head", default="adiabatic", choices=("adiabatic", "diabatic"),
                        help="the network's output head (diabatic: a learned quasi-diabatic Hamiltonian)")
    parser.add_argument("--indexed-couplings", action="store_true", help="diabatic head: couplings weighed per atom")
    parser.add_argument("--keep", help="folder to keep the labelled sets and committees in (default: a temporary one)")
    parser.add_argument("--tracking-only", action="store_true",
                        help="print the noise floor and the oracle tracked by NAC overlaps alone, then stop")
    parser.add_argument("--trajectories", type=int, default=1000)
    parser.add_argument("--decompose", action="store_true",
                        help="also run the committee's surfaces with the oracle's NACs and the oracle's surfaces with "
                             "the committee's NACs, and each member alone (with its own and with the oracle's surfaces)")
    args = parser.parse_args()
    config, oracle, ics, reference = oracle_reference(args.config, args.trajectories)
    committee = replace(config.committee, width=args.width, interactions=args.interactions, epochs=args.epochs,
                        members=args.members, recipe=args.recipe, gap_weight=args.gap_weight,
                        small_gap_weight=args.small_gap_weight,
                        head=args.head, indexed_couplings=args.indexed_couplings)
    floor = max(float(np.abs(populations_on(oracle, *ics, config, seed=s) - reference).max()) for s in (1, 2, 3))
    print(f"noise floor: the oracle against itself with other hop random numbers, largest of 3: max|dP| = {floor:.3f}")
    tracked = float(np.abs(populations_on(OverlapTracked(oracle), *ics, config) - reference).max())
    print(f"the oracle with random state signs, tracked by NAC overlaps alone (as a network without state vectors): "
          f"max|dP| = {tracked:.3f}")
    if args.tracking_only:
        return
    print(f"committee: {args.members} x PaiNN {args.width} x {args.interactions}, {args.epochs} epochs, {args.recipe}, "
          f"gap weight {args.gap_weight:g}, small-gap weight {args.small_gap_weight:g}, "
          f"{args.head} head{' (indexed couplings)' if args.indexed_couplings else ''}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(args.keep or folder)
        root.mkdir(parents=True, exist_ok=True)
        for n in [int(x) for x in args.frames.split(",")]:
            plain = replace(config, initial=replace(config.initial, n_frames=n), committee=committee)
            data = root / f"wigner_{n}.h5"
            every = max(2, int(round(1 / plain.initial.test_fraction)))
            tags = [{"iteration": 0, "index": k, "split": "test" if k % every == every - 1 else "train"} for k in range(n)]
            label_structures(data, oracle, initial_geometries(plain, oracle), tags, oracle_metadata(oracle, plain.oracle.spec), 256)
            started = time.perf_counter()
            train_committee(data, root / f"wigner_{n}", None, plain, 0)
            seconds = time.perf_counter() - started
            value = error(root / f"wigner_{n}" / "committee", oracle, reference, ics, config)
            print(f"  {n:5d} Wigner labels  max|dP| = {value:.3f}  (training {seconds:.0f} s)", flush=True)
            if args.decompose:
                model = ModelPotential(root / f"wigner_{n}" / "committee", oracle.numbers.numpy(), dtype=torch.float64)
                runs = [("committee surfaces + oracle NACs", MixedPotential(model, oracle)),
                        ("oracle surfaces + committee NACs", MixedPotential(oracle, model))]
                for k, member in enumerate(sorted((root / f"wigner_{n}" / "committee").glob("member_*/model.pt"))):
                    alone = ModelPotential(member, oracle.numbers.numpy(), dtype=torch.float64)
                    runs += [(f"member {k} alone", alone), (f"oracle surfaces + member {k} NACs", MixedPotential(oracle, alone))]
                for label, mixed in runs:
                    dp = float(np.abs(populations_on(mixed, *ics, config) - reference).max())
                    print(f"         {label}: max|dP| = {dp:.3f}", flush=True)


if __name__ == "__main__":
    main()
