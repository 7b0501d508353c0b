"""Inference and training speed of the multi-state network, and the cost of FSSH on top of it.

CH2NH2+-sized molecules (6 atoms, 3 states), PaiNN width 64 x 3 interactions, float32, CPU, torch threads 1.
All timings are in one process; the networks are randomly initialised (speed does not depend on the weights).

1. time per structure for batches of 1, 10, 100, 1000: the active-state path (one backward pass for the whole batch),
   the all-states path (one backward pass per state), and a single-state SchNetPack PaiNN of the same size
   (Atomwise energy + autograd forces): the overhead of the multi-state heads;
2. training throughput (frames/s): forward, forces of all states with create_graph, loss, backward, optimiser step;
3. FSSH with the network as potential at 100 trajectories: step time vs one potential call (the integrator's own
   cost), and vs evaluating each trajectory alone with all states' forces (the way a per-trajectory driver works).

    .venv/bin/python benchmarks/bench_model_inference.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import schnetpack as spk
import torch

from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.settings import FSSHSettings
from exsnn.model.network import MultiStateNetwork, NetworkConfig
from exsnn.model.potential import ModelPotential
from exsnn.units import FS_IN_AU_TIME

NUMBERS = np.array([6, 7, 1, 1, 1, 1])
GEOMETRY = np.array([[0, 0, 0], [0, 0, 2.4], [0, 1.8, -1.0], [0, -1.8, -1.0], [0, 1.8, 3.4], [0, -1.8, 3.4]], float)


def timed(function, repeats: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def geometries(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(GEOMETRY[None] + rng.normal(0, 0.05, (n, 6, 3)))


def single_state_painn(width: int, interactions: int, cutoff: float) -> torch.nn.Module:
    return spk.model.NeuralNetworkPotential(
        representation=spk.representation.PaiNN(n_atom_basis=width, n_interactions=interactions,
                                                radial_basis=spk.nn.GaussianRBF(20, cutoff), cutoff_fn=spk.nn.CosineCutoff(cutoff)),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(width, output_key="energy"), spk.atomistic.Forces(energy_key="energy", force_key="forces")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = NetworkConfig(n_states=3, n_atom_basis=args.width, n_interactions=args.interactions, cutoff=10.0,
                           energy_mean_per_atom=[-15.7, -15.7, -15.7], energy_std_per_atom=0.01, coupling_scale=0.05)
    network = MultiStateNetwork(config)
    with tempfile.TemporaryDirectory() as folder:
        model_file = Path(folder) / "model.pt"
        torch.save(
            {
                "format": "exsnn-model",
                "version": 1,
                "network": config.as_dict(),
                "state_dict": network.state_dict(),
                "double": False,
            },
            model_file,
        )
        potential = ModelPotential(model_file, NUMBERS)
        baseline = single_state_painn(args.width, args.interactions, 10.0)
        print(
            f"PaiNN {args.width} x {args.interactions}, 3 states, 6 atoms, float32, torch threads {torch.get_num_threads()}"
        )
        print(
            f"{'batch':>6s} {'active-state':>14s} {'all-states':>12s} {'1-state PaiNN':>14s}   (microseconds per structure)"
        )
        for size in (1, 10, 100, 1000):
            positions = geometries(size)
            batch = potential.batch(positions)
            states = torch.randint(0, 3, (size,))
            repeats = max(3, 300 // size)
            active = timed(lambda batch=batch, states=states: network(batch, forces="selected", states=states), repeats) / size
            every = timed(lambda batch=batch: network(batch, forces="all"), repeats) / size
            single = timed(lambda batch=batch: baseline(dict(batch)), repeats) / size
            print(f"{size:6d} {active * 1e6:14.1f} {every * 1e6:12.1f} {single * 1e6:14.1f}")

        optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
        train_batch = potential.batch(geometries(32, seed=1))
        targets = torch.randn(32, 3)

        def train_step() -> None:
            out = network(train_batch, forces="all", create_graph=True)
            loss = (
                ((out["energies"] + 94.2 - targets) ** 2).mean()
                + (out["forces"] ** 2).mean()
                + (out["smooth_nacs"] ** 2).mean()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        print(
            f"training throughput (batch 32, forces of all states, couplings): {32 / timed(train_step, 10):.0f} frames/s"
        )

        n = 100
        engine = FSSHEngine(potential, FSSHSettings(dt=0.5 * FS_IN_AU_TIME, n_steps=100, seed=1))
        positions = geometries(n, seed=2)
        state = engine.initial_state(positions, torch.zeros_like(positions), torch.full((n,), 2))
        step = timed(lambda: engine.step(state), 10)
        call = timed(lambda: potential.compute(state.positions, states=state.active, nacs=True), 10)
        alone = timed(
            lambda: [potential.compute(state.positions[k : k + 1], all_forces=True, nacs=True) for k in range(n)], 2
        )
        print(
            f"FSSH with the network, {n} trajectories: step {step * 1e3:.1f} ms, one batched potential call "
            f"{call * 1e3:.1f} ms -> integrator adds {100 * (step - call) / call:.0f}%"
        )
        print(
            f"  each trajectory alone with all states' forces: {alone * 1e3:.1f} ms per step -> batched FSSH is "
            f"{alone / step:.0f}x faster per trajectory"
        )


if __name__ == "__main__":
    main()
