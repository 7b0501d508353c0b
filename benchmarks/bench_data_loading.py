"""Random-access reading vs one training step: is data loading the bottleneck of training?

Builds a 100k-frame exsnn dataset (CH2NH2+-sized: 6 atoms, 3 states, energies/forces/NACs/dipoles), then measures
frames per second for random batches of 32 read (a) from memory and (b) straight from the HDF5 file, and compares
each with one training step (forward + autograd forces + backward) of a small SchNetPack PaiNN on batches of the same
size, all in this process; and times one crash-safe append to the big file. Threads: torch.set_num_threads(1) (set --threads to change).

    .venv/bin/python benchmarks/bench_data_loading.py [--frames 100000] [--batches 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import schnetpack as spk
import torch
from synthetic import N_STATES, synthetic_arrays  # benchmarks/synthetic.py

from exsnn.data import DatasetMetadata, append_frames
from exsnn.data.torch_data import ExcitedStateTorchDataset

BATCH = 32


def frames_per_second(dataset: ExcitedStateTorchDataset, n_batches: int, seed: int = 1) -> float:
    rng = np.random.default_rng(seed)
    batches = [rng.integers(0, len(dataset), BATCH) for _ in range(n_batches)]
    start = time.perf_counter()
    for indices in batches:
        dataset.__getitems__(indices)
    return n_batches * BATCH / (time.perf_counter() - start)


def training_frames_per_second(dataset: ExcitedStateTorchDataset, n_batches: int, width: int = 64) -> float:
    cutoff = 10.0
    model = spk.model.NeuralNetworkPotential(
        representation=spk.representation.PaiNN(
            n_atom_basis=width, n_interactions=3, radial_basis=spk.nn.GaussianRBF(20, cutoff), cutoff_fn=spk.nn.CosineCutoff(cutoff)
        ),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(width, n_out=N_STATES, output_key="energies")],
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(2)
    batches = [dataset.__getitems__(rng.integers(0, len(dataset), BATCH)) for _ in range(n_batches)]
    start = time.perf_counter()
    for batch in batches:
        batch = dict(batch)
        batch[spk.properties.R].requires_grad_(True)
        energies = model(batch)["energies"]
        forces = -torch.autograd.grad(energies.sum(), batch[spk.properties.R], create_graph=True)[0]
        loss = ((energies - batch["energies"] + 94.5) ** 2).mean() + (forces.unsqueeze(1) - batch["forces"]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return n_batches * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.h5"
        start = time.perf_counter()
        append_frames(path, synthetic_arrays(args.frames), DatasetMetadata(n_states=N_STATES, method="synthetic"))
        print(f"wrote {args.frames} frames ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        in_memory = ExcitedStateTorchDataset(path, cutoff=10.0)
        print(f"loaded into memory in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        for _ in range(3):
            append_frames(path, synthetic_arrays(1, seed=9))
        append_seconds = (time.perf_counter() - start) / 3
        lazy = ExcitedStateTorchDataset(path, cutoff=10.0, in_memory=False)
        memory_fps = frames_per_second(in_memory, args.batches)
        lazy_fps = frames_per_second(lazy, max(args.batches // 4, 10))
        train_fps = training_frames_per_second(in_memory, max(args.batches // 10, 10))
    print(f"threads: torch {torch.get_num_threads()}; batch size {BATCH}; random batches over {args.frames} frames")
    print(f"  read, in memory       : {memory_fps:10.0f} frames/s")
    print(f"  read, from HDF5 file  : {lazy_fps:10.0f} frames/s")
    print(f"  training step (PaiNN 64x3, forces by autograd): {train_fps:10.0f} frames/s")
    print(f"  in-memory read / training throughput : {memory_fps / train_fps:8.1f}x")
    print(f"  HDF5 read / training throughput      : {lazy_fps / train_fps:8.1f}x")
    print(f"  one crash-safe append (1 frame) to the {args.frames}-frame file: {append_seconds:.3f} s (copy-on-write)")


if __name__ == "__main__":
    main()
