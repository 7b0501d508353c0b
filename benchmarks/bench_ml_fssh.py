"""Throughput of FSSH driven by the multi-state network: trajectory-steps per second against batch size.

A randomly initialised PaiNN (width 64 x 3 interactions by default, 3 states, float32; speed does not depend on the
weights) for a CH2NH2+-sized molecule (6 atoms), alone or as a committee (--committee 4), drives FSSH (dt 0.5 fs,
EDC, 300 K velocities, start on S2). All numbers come from one process, each printed as soon as it is measured:

1. for every batch size (--batches, default 1,100,1000): the time of one FSSH step and trajectory-steps per second;
   the time of one forward + backward of the network(s) alone on the same batch (the forces of the active states),
   and of the potential call (network plus neighbour list and float64 conversion); the engine's overhead is the
   step over the network alone (goal: <= 10 % at >= 1000 trajectories);
2. with --alone N (default 100, if N is among the batches): every trajectory evaluated alone with the forces of all
   states and the NACs, eager, timed on --alone-sample of them, against the batched step per trajectory (goal:
   >= 20x on the CPU): through exsnn's potential (a lower bound for a per-trajectory driver), and through SchNetPack's
   AtomsConverter with an ASE neighbour list per structure (the way SPaiNN's SHARC interface evaluates a step);
3. with --training: training throughput in frames per second (forward, forces of all states with create_graph,
   loss on energies, forces and couplings, backward, Adam step; as bench_model_inference.py), batch --train-batch;
4. with --sync-debug on a GPU: the lines of exsnn that synchronise with the device during one step.

Every part is time-boxed: --steps timed steps per batch size, stopped early after --max-seconds.

    .venv/bin/python benchmarks/bench_ml_fssh.py [--batches 1,100,1000] [--steps 5] [--committee 4] [--compile]
    .venv/bin/python benchmarks/bench_ml_fssh.py --device cuda --batches 1000,10000 --training --sync-debug
    [--compile-engine] [--head diabatic]

Profile before issue #17 (2-core EPYC shared with another job, 1 torch thread, cProfile and torch.profiler over 10
steps at 100 trajectories; at 1000 the shares are the same): the potential call is 97 % of a step, the engine
(velocity Verlet, sign tracking, electronic propagation, hopping, decoherence, status) 3 %, recording is not part of
`FSSHEngine.step`. Within the network call: PaiNN representation forward 35 %, heads (energies, couplings) 5-7 %,
autograd backward for the forces 51-57 %, neighbour list 0.5-1 % plus 4.4 % in the cutoff distance filter (norm
and boolean indexing, a host synchronisation on a GPU), Python module overhead about 2 %. By operator: elementwise
multiplications on edge tensors (filters x features, vectors x directions and their backward) 38 %, matrix
products 17 %, concatenation (split backward) 7 %, gathers and index_add scatters 13 %; denormal floats from the
Gaussian radial basis cost about 10 % (now flushed to zero while the network runs). Per structure the network costs
530-570 us at batches of 40-300, more at 1000 (cache), 1.4 ms at a batch of 5; `torch.compile` (inductor, CPU)
takes it to about 360 us at 100 (compilation 40-110 s on this machine). A dense (B, n, n) PaiNN formulation was
tried: 5-8 % faster on the CPU, not worth a second implementation.

On a GPU (H200, torch 2.11; this script with --device cuda --alone 0 --batches 1000,10000,100000 --steps 10
--sync-debug [--compile-engine] [--compile], one machine session), trajectory-steps per second and the engine's
overhead over the network alone:

    trajectories            1000            10^4             10^5
    eager                   83k   66 %      368k  37 %       530k  4.4 %
    --compile-engine        85k   53 %      414k  22 %       535k  3.4 %
    + --compile (network)                   714k  41 %       1.11M 7.8 %
    H100 (80 GB HBM3), another machine session:
    eager                   68k   61 %      352k  25 %       454k  4.4 %
    --compile-engine        71k   56 %      359k  22 %       459k  3.4 %

The engine's overhead depends on the host CPU that launches the kernels as much as on the GPU (the two machines'
eager overheads at 10^4 differ by 12 points); the fused engine lands at 22 % on both.

At 10^4 the eager engine's 7 ms per step are launches of some 500 small float64 operations and 7 host
synchronisations (substep bookkeeping x3, the finiteness check, the running count, the hop check, EDC's fill);
`FSSHSettings.compile` (`exsnn.dynamics.fusion`) fuses the substeps, substep counts and EDC (4.4 ms left, 6
synchronisations). What remains is about 130 eager operations (sign tracking, couplings, hops, status) and the
fixed cost of each compiled call (about 60 us on the CPU): below 10 % needs CUDA graphs. The diabatic head (--head
diabatic, one backward pass per Hamiltonian element) takes 86 ms per step at 10^4 (116k trajectory-steps/s), 3.2x
the adiabatic head. Training (--training --train-batch 256): 5733 frames/s on the H200, 6048 on the H100.

On the 2-core CPU (2026-12-06, one other single-threaded job running), 100 trajectories against each alone with all
states' forces and NACs: `--batches 100 --steps 5 --compile` (compiling took 45 s), three runs: 20.8x / 25.0x /
25.3x faster per trajectory than SchNetPack's AtomsConverter way, 17.8x / 21.4x / 21.4x than exsnn's own potential
per trajectory; eager 13.6x and 11.5x. Engine overhead (`--batches 1000,3000 --steps 7 --alone 0`): 2.7% at 1000,
within noise of zero at 3000.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.settings import FSSHSettings
from exsnn.model.network import MultiStateNetwork, NetworkConfig
from exsnn.model.potential import ModelPotential
from exsnn.model.training import save_network
from exsnn.units import FS_IN_AU_TIME

NUMBERS = np.array([6, 7, 1, 1, 1, 1])
GEOMETRY = np.array([[0, 0, 0], [0, 0, 2.4], [0, 1.8, -1.0], [0, -1.8, -1.0], [0, 1.8, 3.4], [0, -1.8, 3.4]], float)
KELVIN_IN_HARTREE = 3.166811563e-6


def hardware(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    text = f"CPU {cpu} ({os.cpu_count()} logical cores), torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        text += f", GPU {properties.name} ({properties.total_memory / 2**30:.0f} GiB)"
    return text


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


def write_models(folder: Path, committee: int, width: int, interactions: int, head: str = "adiabatic") -> Path:
    """A single model file or a committee folder of randomly initialised networks (`head`: NetworkConfig.head)."""
    config = dict(n_states=3, n_atom_basis=width, n_interactions=interactions, cutoff=10.0,
                  energy_mean_per_atom=[-15.7, -15.65, -15.6], energy_std_per_atom=0.01, coupling_scale=0.05,
                  elements=[1, 6, 7], head=head)
    if committee == 1:
        torch.manual_seed(0)
        save_network(MultiStateNetwork(NetworkConfig(**config)), folder / "model.pt")
        return folder / "model.pt"
    for k in range(committee):
        torch.manual_seed(k)
        (folder / f"member_{k}").mkdir()
        save_network(MultiStateNetwork(NetworkConfig(**config)), folder / f"member_{k}" / "model.pt")
    (folder / "committee.json").write_text(json.dumps({"members": [f"member_{k}/model.pt" for k in range(committee)]}))
    return folder


def initial_conditions(n: int, masses: torch.Tensor, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    positions = torch.as_tensor(GEOMETRY[None] + rng.normal(0, 0.05, (n, 6, 3)))
    sigma = np.sqrt(300.0 * KELVIN_IN_HARTREE / masses.cpu().numpy())[None, :, None]
    velocities = torch.as_tensor(rng.normal(0, 1, (n, 6, 3)) * sigma)
    return positions, velocities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,100,1000", help="comma-separated numbers of trajectories")
    parser.add_argument("--steps", type=int, default=5, help="timed FSSH steps per batch size (after one warm-up)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop timing a batch size after this long")
    parser.add_argument("--committee", type=int, default=1, help="committee members (1: a single model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--head", choices=("adiabatic", "diabatic"), default="adiabatic",
                        help="the network's head (diabatic: a learned quasi-diabatic Hamiltonian)")
    parser.add_argument("--compile", action="store_true", help="evaluate the networks through torch.compile")
    parser.add_argument("--compile-engine", action="store_true",
                        help="fuse the integrator's arithmetic through torch.compile (FSSHSettings.compile)")
    parser.add_argument("--alone", type=int, default=100, help="batch size of the per-trajectory comparison (0: skip)")
    parser.add_argument("--alone-sample", type=int, default=20, help="trajectories actually timed alone")
    parser.add_argument("--training", action="store_true", help="also measure training throughput")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--sync-debug", action="store_true", help="GPU: list the host synchronisations of one step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    print(hardware(device), flush=True)
    kind = f"committee of {args.committee}" if args.committee > 1 else "single model"
    print(f"PaiNN {args.width} x {args.interactions}, {args.head} head, 3 states, 6 atoms, {args.dtype}, {kind}, device {device}"
          f"{', torch.compile' if args.compile else ''}; FSSH dt 0.5 fs, EDC, float64 integrator"
          f"{' (fused through torch.compile)' if args.compile_engine else ''}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        path = write_models(Path(folder), args.committee, args.width, args.interactions, args.head)
        potential = ModelPotential(path, NUMBERS, device=device, dtype=dtype, compile=args.compile)
        settings = FSSHSettings(dt=0.5 * FS_IN_AU_TIME, n_steps=10**9, seed=1, max_energy_drift=1e6,
                                compile=args.compile_engine)
        step_seconds: dict[int, float] = {}
        print(f"{'trajectories':>12s} {'ms/step':>10s} {'traj-steps/s':>13s} {'network ms':>11s} {'potential ms':>13s} "
              f"{'engine overhead':>16s}", flush=True)
        for n in batches:
            engine = FSSHEngine(potential, settings)
            positions, velocities = initial_conditions(n, potential.masses)
            start = time.perf_counter()
            state = engine.initial_state(positions, velocities, torch.full((n,), 2))
            for _ in range(3 if args.compile_engine else 1):  # warm-up (and compilation: more substep counts)
                engine.step(state)
            warm_up = now(device) - start
            if args.compile and warm_up > 5:
                print(f"{'':12s} (first calls with torch.compile took {warm_up:.0f} s)", flush=True)
            # interleaved: one step, the network(s) alone, the potential call; medians (robust on a busy machine)
            samples: dict[str, list[float]] = {"step": [], "network": [], "potential": []}
            begin = time.perf_counter()
            while len(samples["step"]) < args.steps and (not samples["step"] or time.perf_counter() - begin < args.max_seconds):
                start = now(device)
                engine.step(state)
                samples["step"].append(now(device) - start)
                batch = potential.batch(state.positions)
                start = now(device)
                network_alone(potential, batch, state.active)
                samples["network"].append(now(device) - start)
                start = now(device)
                potential.compute(state.positions, states=state.active, nacs=True)
                samples["potential"].append(now(device) - start)
            step, network, call = (float(np.median(samples[k])) for k in ("step", "network", "potential"))
            step_seconds[n] = step
            print(f"{n:12d} {step * 1e3:10.2f} {n / step:13.0f} {network * 1e3:11.2f} {call * 1e3:13.2f} "
                  f"{100 * (step - network) / network:15.1f}%", flush=True)
            if args.sync_debug and device.type == "cuda" and n == max(batches):
                report_synchronisations(engine, state)

        if args.alone and args.alone in step_seconds:
            per_trajectory_comparison(path, args.alone, args.alone_sample, step_seconds[args.alone], device, dtype)

        if args.training:
            training_throughput(potential, args.train_batch, args.train_steps, device)


def network_alone(potential: ModelPotential, batch: dict[str, torch.Tensor], active: torch.Tensor) -> None:
    """One forward and backward pass (forces of the active states) of every member, as the potential evaluates them
    (compiled with --compile), on a prepared batch."""
    potential.evaluate(batch, "selected", active)


def per_trajectory_comparison(path: Path, n: int, sample: int, step: float, device: torch.device, dtype: torch.dtype) -> None:
    """Each of n trajectories evaluated alone with the forces of all states and the NACs, eager, timed on `sample` of
    them: through exsnn's potential (its neighbour list; a lower bound), and through SchNetPack's AtomsConverter with
    an ASE neighbour list per structure, as SPaiNN's SHARC interface evaluates a trajectory's step."""
    import ase
    import schnetpack as spk

    eager = ModelPotential(path, NUMBERS, device=device, dtype=dtype)
    positions, _ = initial_conditions(n, eager.masses)
    sample = min(n, sample)
    converter = spk.interfaces.AtomsConverter(neighbor_list=spk.transform.ASENeighborList(cutoff=eager.cutoff),
                                              device=device, dtype=dtype)

    def through_converter(k: int) -> None:
        inputs = converter(ase.Atoms(numbers=NUMBERS, positions=positions[k].numpy()))
        for member in eager.networks:
            member(inputs, forces="all")

    batched = step / n
    for name, function in (("exsnn potential", lambda k: eager.compute(positions[k : k + 1], all_forces=True, nacs=True)),
                           ("SchNetPack AtomsConverter", through_converter)):
        function(0)
        start = now(device)
        for k in range(sample):
            function(k)
        alone = (now(device) - start) / sample
        print(f"each of {n} trajectories alone, all states' forces and NACs ({name}, eager): {alone * 1e3:.2f} ms per "
              f"trajectory-step; batched FSSH {batched * 1e3:.3f} ms -> {alone / batched:.1f}x faster per trajectory",
              flush=True)


def report_synchronisations(engine: FSSHEngine, state) -> None:  # noqa: ANN001
    """The lines of exsnn where one step waits for the GPU (torch's sync debug mode)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.step(state)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    places: dict[str, int] = {}
    for warning in caught:
        if "synchroniz" in str(warning.message):
            key = f"{Path(warning.filename).name}:{warning.lineno}"
            places[key] = places.get(key, 0) + 1
    print(f"{'':12s} host synchronisations in one step: {sum(places.values())} at "
          + ", ".join(f"{k} (x{v})" for k, v in sorted(places.items())), flush=True)


def training_throughput(potential: ModelPotential, size: int, steps: int, device: torch.device) -> None:
    """Frames per second of training steps on one network (as bench_model_inference.py)."""
    network = potential.networks[0]
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    positions, _ = initial_conditions(size, potential.masses, seed=1)
    batch = potential.batch(positions.to(device))
    targets = torch.randn(size, 3, device=device, dtype=batch["_positions"].dtype)

    def train_step() -> None:
        out = network(batch, forces="all", create_graph=True)
        loss = ((out["energies"] + 94.2 - targets) ** 2).mean() + (out["forces"] ** 2).mean() + (out["smooth_nacs"] ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()
    start = now(device)
    for _ in range(steps):
        train_step()
    seconds = (now(device) - start) / steps
    network.eval()
    print(f"training throughput (batch {size}, forces of all states, couplings): {size / seconds:.0f} frames/s", flush=True)


if __name__ == "__main__":
    main()
