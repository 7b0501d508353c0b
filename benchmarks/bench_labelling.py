"""PySCF labelling cost: time split per geometry, and throughput with 1 and 2 Dask workers on loopback.

1. CH2NH2+ (charge +1), 3 states: SCF (+ internal stability analysis, timed as the difference to a run without it)
   + TDA/TDDFT roots, gradients of all states, analytic NACs of all pairs (the default), at TDA-HF/STO-3G,
   TDA-B3LYP/6-31G* and TDDFT-B3LYP/6-31G* (full TDDFT).
2. NAC cost for all three pairs: analytic (S0-Sk: one multi-right-hand-side CPHF/CPKS solve; S1-S2: one pair
   quadratic form of the TD gradient) vs overlap finite differences (6n displaced SCF + TDA calculations), at
   TDA-HF/6-31G* and TDA-B3LYP/6-31G*, beside the time of one excited-state gradient.
3. Labelling throughput (geometries per minute) of `label_file` on 8 displaced CH2NH2+ geometries at TDA-HF/6-31G
   without NACs, through a Dask LocalCluster with 1 and then 2 worker processes (1 thread each); the cluster start-up
   is not counted.
4. The `pyscf:` potential on one surface-hopping step of 2 CH2NH2+ trajectories at TDA-HF/6-31G* (energies,
   active-state forces, analytic NACs; each SCF starting from its trajectory's previous density), in this process and
   on 2 local workers (the pool started by an earlier step, not counted); and a hop refresh (another state's
   gradient at the same geometry, after a step without couplings) against the full calculation it replaces.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_labelling.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from exsnn.qm.labelling import label_file
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.settings import parse_method
from exsnn.units import ANGSTROM_IN_BOHR

NUMBERS = np.array([6, 7, 1, 1, 1, 1])
GEOMETRY = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.28], [0.0, 0.94, -0.54], [0.0, -0.94, -0.54],
                     [0.0, 0.87, 1.85], [0.0, -0.87, 1.85]]) * ANGSTROM_IN_BOHR


def split(method: str) -> None:
    settings = parse_method(method, n_states=3, charge=1)
    result = label_geometry(NUMBERS, GEOMETRY, settings)
    if result.failure:
        print(f"{method}: failed: {result.failure}")
        return
    t = result.timings
    unchecked = label_geometry(NUMBERS, GEOMETRY, parse_method(method, n_states=3, charge=1, check_stability=False)).timings
    print(f"{method:18s} SCF+TDA {t['scf_and_excited']:.2f} s (of which the SCF stability analysis "
          f"{t['scf_and_excited'] - unchecked['scf_and_excited']:.2f} s), gradients (3 states) {t['gradients']:.2f} s, "
          f"analytic NACs (3 pairs) {t['nacs']:.2f} s; total {t['total']:.2f} s")


def analytic_vs_overlap(method: str) -> None:
    """NACs of S0, S1, S2 at one geometry: analytic vs overlap finite differences, after the same SCF + TDA."""
    from exsnn.qm.analytic_nacs import excited_gradient_tool, excited_pair_numerator, ground_excited_nacs
    from exsnn.qm.excited import excited_states

    settings = parse_method(method, n_states=3, charge=1, etf=False)
    states = excited_states(NUMBERS, GEOMETRY, settings)
    start = time.perf_counter()
    td_gradient = excited_gradient_tool(states)
    gradients = np.stack([states.mf.nuc_grad_method().kernel(), td_gradient.kernel(state=1), td_gradient.kernel(state=2)], axis=1)
    per_gradient = (time.perf_counter() - start) / 3
    start = time.perf_counter()
    ground_excited_nacs(states)
    ground = time.perf_counter() - start
    start = time.perf_counter()
    excited_pair_numerator(states, td_gradient, gradients, 1, 2, etf=False)
    excited = time.perf_counter() - start
    overlap = label_geometry(NUMBERS, GEOMETRY, parse_method(method, n_states=3, charge=1, nacs="overlap")).timings["nacs"]
    print(f"{method:18s} NACs of 3 pairs: analytic {ground + excited:.2f} s (S0-S1 and S0-S2 {ground:.2f} s, S1-S2 "
          f"{excited:.2f} s), overlap finite differences {overlap:.2f} s ({overlap / (ground + excited):.0f}x); "
          f"one state gradient {per_gradient:.2f} s")


def throughput(workers: int, folder: Path) -> float:
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    xyz = folder / f"geometries_{workers}.xyz"
    with open(xyz, "w") as handle:
        for _ in range(8):
            handle.write("6\nCH2NH2+\n")
            for z, r in zip(NUMBERS, GEOMETRY / ANGSTROM_IN_BOHR + rng.normal(0, 0.03, (6, 3))):
                handle.write(f"{chemical_symbols[z]} {r[0]:.6f} {r[1]:.6f} {r[2]:.6f}\n")
    settings = parse_method("tda-hf/6-31g", n_states=3, charge=1, nacs="none")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1",
                      env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}) as cluster, Client(cluster):
        start = time.perf_counter()
        summary = label_file(xyz, folder / f"out_{workers}.h5", settings, executor=f"dask:{cluster.scheduler_address}", progress=False)
        elapsed = time.perf_counter() - start
    assert summary.labelled == 8, summary.failures
    return 8 / elapsed * 60


def potential_step(repeats: int = 3) -> None:
    import torch

    from exsnn.potentials.spec import load_potential

    rng = np.random.default_rng(1)
    start = torch.as_tensor(GEOMETRY + rng.normal(0, 0.03, (2, 6, 3)))
    trajectories, active = torch.tensor([0, 1]), torch.tensor([1, 1])
    seconds = {}
    for name, options in (("in this process", ""), ("2 local workers", ",workers=2")):
        potential = load_potential(f"pyscf:tda-hf/6-31g*,states=3,charge=1{options}", numbers=NUMBERS)
        potential.compute(start, states=active, trajectories=trajectories)  # starts the pool; densities for the next step
        steps = []
        for step in range(1, repeats + 1):
            t = time.perf_counter()
            potential.compute(start + 0.01 * step, states=active, trajectories=trajectories)
            steps.append(time.perf_counter() - t)
        seconds[name] = min(steps)
        potential.close()  # type: ignore[attr-defined]
    potential = load_potential("pyscf:tda-hf/6-31g*,states=3,charge=1", numbers=NUMBERS)
    t = time.perf_counter()
    potential.compute(start[:1], states=active[:1], nacs=False, trajectories=trajectories[:1])
    full = time.perf_counter() - t
    t = time.perf_counter()
    potential.compute(start[:1], states=torch.tensor([2]), nacs=False, trajectories=trajectories[:1])
    refresh = time.perf_counter() - t
    print(f"pyscf: potential, a step of 2 trajectories (TDA-HF/6-31G*, NACs; best of {repeats}): "
          + ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
          + f" -> {seconds['in this process'] / seconds['2 local workers']:.2f}x; hop refresh {refresh:.2f} s "
          f"(one gradient on the saved SCF + TDA) vs {full:.2f} s for SCF + TDA + gradient")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    print("CH2NH2+, 3 states, 1 thread:")
    split("tda-hf/sto-3g")
    split("tda-b3lyp/6-31g*")
    split("tddft-b3lyp/6-31g*")
    analytic_vs_overlap("tda-hf/6-31g*")
    analytic_vs_overlap("tda-b3lyp/6-31g*")
    with tempfile.TemporaryDirectory() as folder:
        one = throughput(1, Path(folder))
        two = throughput(2, Path(folder))
    print(f"labelling throughput (TDA-HF/6-31G, 8 geometries): 1 worker {one:.1f}/min, 2 workers {two:.1f}/min -> {two / one:.2f}x")
    potential_step()


if __name__ == "__main__":
    main()
