"""exsnn's batched FSSH on Tully's models against a plain vectorised NumPy FSSH written here, in one process.

Both take the same Wigner-sampled initial conditions (`sample_initial_conditions`), the same time step (default
dt = 20 a.u.), box and step limit, no decoherence, and compact their batch once fewer than 70 % of the trajectories
run. The NumPy FSSH is the textbook one for two states in one dimension: closed-form adiabatic energies, forces
and NAC (analytic mixing angle, so no sign tracking), velocity Verlet, the coefficients propagated exactly under
the step's mid-point Hamiltonian diag(E) - i v d, Tully's hopping probability (trapezoid over the step), velocity
rescaling and frustrated hops kept. exsnn does more per step: each trajectory's own number of electronic substeps
(`auto_substeps`), sign tracking of the states, energy-drift and failure checks, counter-based random numbers per
trajectory (resumable). Its run with `--substeps 1` (one electronic substep per step, as the NumPy one) is timed
too. The probabilities of both must agree within their binomial errors (|z| < 4 printed as "agree").

    .venv/bin/python benchmarks/bench_fssh_numpy.py [--ntraj 20000] [--dt 20] [--momentum 20] [--model tully1]
    [--repeats 3] [--compile-engine]

With --compile-engine exsnn also runs with its arithmetic fused through torch.compile (FSSHSettings.compile,
compiled once before the timings). On the CPU that does not pay: 72 us per trajectory against 61 eager and 16 for
NumPy (tully1, 20,000 trajectories, one repeat on a busy 2-core machine); it is meant for GPUs.

Profile of exsnn's in-process run before issue #17 (tully1, k = 20, dt = 20, 20,000 trajectories, 167 steps, CPU
time, cProfile; 114-136 us per trajectory on a loaded 2-core EPYC): electronic propagation 47 % (of it the substep
loop 62 %), the Tully potential (diabatic matrices, 2x2 eigensystem, padding) 20 %, the rest of the step 33 %
(random numbers 3 %, sign tracking 3 %, target choice 4 %, status update 3 %, finiteness checks 4 %, hops and
refreshed forces 4 %, Python and small tensor operations the rest); by operator: elementwise arithmetic 35 %,
concatenation and stacking 14 %, index_select / gather / index 12 %, sin / cos 8 %. About 500 tensor operations per
step, 0.34 us per trajectory-step plus 1.7 ms per step (at 20,000 trajectories memory-bound; 13 % of the time went
to page faults of freed and re-allocated buffers: MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ help exsnn and
NumPy alike). Since: the two-state potential works on matrix elements (no 2x2 matrices assembled and taken apart, no
atan2: its vectorised and scalar kernels round differently), two-state coupling rows without gathers, gathers instead
of index_select for the substep subset, no zero probabilities added, one histogram transfer for the substep
bookkeeping: exsnn 56-61 us CPU per trajectory against NumPy's 14-15 (about 4x; 4.5x before).

Two states since 2026-12-06 (`exsnn.dynamics.electronic.two_state_substep`): the substep is the exact exponential of
the fourth-order Magnus generator in closed form and the hopping probability the active state's population loss, so
a Tully-1 trajectory needs 1 substep on most steps (k = 20, dt = 20 a.u., 4,000 trajectories: 1.07 substeps per
trajectory-step on average, 1.37 with the split-operator substeps, whose count was set by the coupling angle and
splitting error). Same command, 20,000 trajectories, best of 3, on the 2-core machine with two other single-threaded
jobs running: exsnn 45 us CPU per trajectory against NumPy's 14 (3.26x; wall 3.10x; one substep forced: 2.81x); the
split-operator version under the same load 56 us against 15 (3.81x; wall 3.61x). The transmitted lower-state share at
dt = 20 a.u. is 0.493 +- 0.004 (split-operator substeps: 0.490; NumPy's single mid-point exponential with trapezoid
probabilities: 0.481; converged, dt = 2: 0.498).

The two-state substep written as multiply-adds (addcmul, one pass each), without the global phase of the mean
energy, with its per-step inputs (half-gap, coupling, their changes, the commutator rate) laid out once per step and
the probabilities summed as the active state's loss alone (2026-12-06, session 34): same command, the machine
shared with one single-threaded training job, exsnn 40 us CPU per trajectory against NumPy's 16 (2.55x; wall
2.52x; one substep forced: 2.26x), the same outcomes to the last digit (T_lower 0.4927); before, under the same
load: 56 us against 17 (3.23x).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from exsnn.dynamics.scattering import COMPACT_BELOW, default_start, run_scattering, sample_initial_conditions
from exsnn.potentials.tully import TULLY_MASS, TULLY_MODELS
from exsnn.validation.wavepacket import exact_scattering

OUTCOMES = ("R_lower", "T_lower", "R_upper", "T_upper")


def diabatic(model: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """V11, V22, V12 and their x-derivatives of Tully's models (as exsnn.potentials.tully)."""
    if model == "tully1":
        A, B, C, D = 0.01, 1.6, 0.005, 1.0
        decay = np.exp(-B * np.abs(x))
        v11 = np.sign(x) * A * (1 - decay)
        v12 = C * np.exp(-D * x * x)
        return v11, -v11, v12, A * B * decay, -A * B * decay, -2 * D * x * v12
    if model == "tully2":
        A, B, C, D, E0 = 0.1, 0.28, 0.015, 0.06, 0.05
        gauss = A * np.exp(-B * x * x)
        v12 = C * np.exp(-D * x * x)
        zero = np.zeros_like(x)
        return zero, E0 - gauss, v12, zero, 2 * B * x * gauss, -2 * D * x * v12
    A, B, C = 6e-4, 0.1, 0.9
    left = x < 0
    growth, decay = np.exp(C * np.minimum(x, 0)), np.exp(-C * np.maximum(x, 0))
    const, zero = np.full_like(x, A), np.zeros_like(x)
    return const, -const, np.where(left, B * growth, B * (2 - decay)), zero, zero, np.where(left, B * C * growth, B * C * decay)


def adiabatic(model: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies (n, 2), forces -dE/dx (n, 2) and the NAC d_01 (n,) of the two adiabatic states at x (n,)."""
    a, d, b, da, dd, db = diabatic(model, x)
    h, dh = 0.5 * (a - d), 0.5 * (da - dd)
    mean, dmean = 0.5 * (a + d), 0.5 * (da + dd)
    r2 = h * h + b * b
    r = np.sqrt(r2)
    dr = (h * dh + b * db) / r
    energies = np.stack([mean - r, mean + r], axis=1)
    forces = -np.stack([dmean - dr, dmean + dr], axis=1)
    return energies, forces, (h * db - b * dh) / (2 * r2)  # d01 = (1/2) d(theta)/dx, tan(theta) = b / h


def numpy_fssh(model: str, x: np.ndarray, v: np.ndarray, dt: float, n_steps: int, box: float, seed: int) -> tuple[dict[str, float], int]:
    """Plain vectorised FSSH of trajectories starting on the lower state at x, v (n,); returns the outcome
    probabilities and the number of steps taken."""
    n = len(x)
    m = TULLY_MASS
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    active = np.zeros(n, dtype=np.int64)
    c = np.zeros((n, 2), dtype=np.complex128)
    c[:, 0] = 1.0
    energies, forces, nac = adiabatic(model, x)
    coupling = v * nac
    final_x, final_state, finished = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    running = np.ones(n, dtype=bool)
    rows = np.arange(n)
    flux_old = np.zeros(n)
    step = 0
    while step < n_steps and running.any():
        step += 1
        f = forces[rows, active]
        v_half = v + 0.5 * dt * f / m
        x = x + dt * v_half
        energies_new, forces, nac = adiabatic(model, x)
        v = v_half + 0.5 * dt * forces[rows, active] / m
        coupling_new = v * nac
        # electrons: exact propagator of H = diag(E) - i T (T_01 = -T_10 = v d01) at the step's mid-point
        delta = 0.25 * ((energies[:, 1] - energies[:, 0]) + (energies_new[:, 1] - energies_new[:, 0]))
        t = 0.5 * (coupling + coupling_new)
        omega = np.sqrt(delta * delta + t * t)
        cos, sinc = np.cos(omega * dt), np.sin(omega * dt) / np.where(omega > 0, omega, 1.0)
        c0, c1 = c[:, 0], c[:, 1]
        k0, k1 = -delta * c0 - 1j * t * c1, 1j * t * c0 + delta * c1
        c = np.stack([cos * c0 - 1j * sinc * k0, cos * c1 - 1j * sinc * k1], axis=1)
        # hopping: g = 2 Re(c_a* c_b) T_ab dt / |c_a|^2, trapezoid over the step (T_10 = -T_01)
        ca, cb = c[rows, active], c[rows, 1 - active]
        sign = np.where(active == 0, 1.0, -1.0)
        flux_new = 2 * (ca.conj() * cb).real * coupling_new * sign / np.maximum(np.abs(ca) ** 2, 1e-300)
        g = np.maximum(0.5 * (flux_old + flux_new) * dt, 0.0)
        flux_old = flux_new
        hop = running & (rng.random(len(x)) < g)
        if hop.any():
            target = 1 - active
            kinetic = 0.5 * m * v * v + energies_new[rows, active] - energies_new[rows, target]
            allowed = hop & (kinetic >= 0)
            v = np.where(allowed, np.sign(v) * np.sqrt(2 * np.maximum(kinetic, 0.0) / m), v)
            active = np.where(allowed, target, active)
            ca, cb = c[rows, active], c[rows, 1 - active]  # the flux out of the new active state
            sign = np.where(active == 0, 1.0, -1.0)
            flux_old = 2 * (ca.conj() * cb).real * coupling_new * sign / np.maximum(np.abs(ca) ** 2, 1e-300)
        energies, coupling = energies_new, coupling_new
        left = running & (np.abs(x) > box) & (x * v > 0)
        if left.any():
            final_x[ids[left]], final_state[ids[left]], finished[ids[left]] = x[left], active[left], True
            running = running & ~left
        if running.sum() < COMPACT_BELOW * len(x):
            keep = np.nonzero(running)[0]
            ids, x, v, active, c, energies, forces = ids[keep], x[keep], v[keep], active[keep], c[keep], energies[keep], forces[keep]
            coupling, flux_old, running, rows = coupling[keep], flux_old[keep], running[keep], np.arange(len(keep))
    counts = {
        "R_lower": finished & (final_x < 0) & (final_state == 0),
        "T_lower": finished & (final_x > 0) & (final_state == 0),
        "R_upper": finished & (final_x < 0) & (final_state == 1),
        "T_upper": finished & (final_x > 0) & (final_state == 1),
    }
    return {k: float(v.sum()) / n for k, v in counts.items()}, step


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tully1", "tully2", "tully3"), default="tully1")
    parser.add_argument("--momentum", type=float, default=20.0)
    parser.add_argument("--ntraj", type=int, default=20_000)
    parser.add_argument("--dt", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact", action="store_true", help="also print the exact quantum probabilities (seconds)")
    parser.add_argument("--compile-engine", action="store_true",
                        help="also time exsnn with its arithmetic fused through torch.compile (FSSHSettings.compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU {cpu_name()} ({os.cpu_count()} logical cores), Python {platform.python_version()}, torch {torch.__version__}, "
          f"numpy {np.__version__}, torch threads {torch.get_num_threads()}", flush=True)
    x0, _ = default_start(args.momentum)
    n_steps = int(math.ceil(8.0 * abs(x0) * TULLY_MASS / args.momentum / args.dt)) + 2000  # as run_scattering
    positions, velocities = sample_initial_conditions(args.ntraj, args.momentum, TULLY_MASS, args.seed)
    x, v = positions[:, 0, 0].numpy(), velocities[:, 0, 0].numpy()
    run_scattering(args.model, args.momentum, 100, seed=args.seed, dt=args.dt)  # warm-up
    if args.compile_engine:  # compilation, outside the timings (cached in the process)
        run_scattering(args.model, args.momentum, 2000, seed=args.seed, dt=args.dt, compile=True)
    timings: dict[str, float] = {}  # wall-clock seconds, best of the repeats
    cpu: dict[str, float] = {}  # CPU seconds of this process (what a busy machine's other jobs do not inflate)
    results: dict[str, dict[str, float]] = {}
    steps: dict[str, int] = {}
    runs = {
        "exsnn": lambda: run_scattering(args.model, args.momentum, args.ntraj, seed=args.seed, dt=args.dt),
        "exsnn, 1 substep": lambda: run_scattering(args.model, args.momentum, args.ntraj, seed=args.seed, dt=args.dt, substeps=1),
        **({"exsnn, fused": lambda: run_scattering(args.model, args.momentum, args.ntraj, seed=args.seed, dt=args.dt,
                                                    compile=True)} if args.compile_engine else {}),
        "NumPy": lambda: numpy_fssh(args.model, x.copy(), v.copy(), args.dt, n_steps, abs(x0), args.seed),
    }
    for _ in range(args.repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            timings[name] = min(timings.get(name, math.inf), elapsed)
            cpu[name] = min(cpu.get(name, math.inf), elapsed_cpu)
            if isinstance(out, tuple):
                results[name], steps[name] = out
            else:
                results[name], steps[name] = out.probabilities, out.steps_run
    print(f"{args.model}, k = {args.momentum:g} a.u., dt = {args.dt:g} a.u., {args.ntraj} trajectories, best of {args.repeats}")
    print(f"{'run':18s} {'steps':>6s} {'us/traj wall':>13s} {'vs NumPy':>9s} {'us/traj CPU':>12s} {'vs NumPy':>9s}   "
          + "  ".join(f"{k:>15s}" for k in OUTCOMES))
    for name in runs:
        probabilities = "  ".join(f"{results[name][k]:7.4f}+-{error(results[name][k], args.ntraj):.4f}" for k in OUTCOMES)
        print(f"{name:18s} {steps[name]:6d} {timings[name] / args.ntraj * 1e6:13.2f} {timings[name] / timings['NumPy']:8.2f}x "
              f"{cpu[name] / args.ntraj * 1e6:12.2f} {cpu[name] / cpu['NumPy']:8.2f}x   {probabilities}")
    if args.exact:
        exact = exact_scattering(TULLY_MODELS[args.model], args.momentum).as_dict()
        print(f"{'exact (wavepacket)':18s} {'':6s} {'':13s} {'':9s} {'':12s} {'':9s}   "
              + "  ".join(f"{exact[k]:7.4f}{'':8s}" for k in OUTCOMES))
    for name in [name for name in runs if name != "NumPy"]:
        z = max(abs(results[name][k] - results["NumPy"][k])
                / math.hypot(error(results[name][k], args.ntraj), error(results["NumPy"][k], args.ntraj)) for k in OUTCOMES)
        print(f"{name} vs NumPy: largest |z| over the outcomes {z:.2f} -> {'agree' if z < 4 else 'DISAGREE'}")


if __name__ == "__main__":
    main()
