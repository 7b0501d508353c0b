"""Curvature-driven couplings (Baeck-An, `[integrator] couplings = "curvature"`) against NAC-based FSSH and exact
results: the limits quoted in exsnn/dynamics/curvature.py.

1. Tully models 1 and 2: lower-state transmission of both schemes (velocity rescaling for both) against the exact
   split-operator wavepacket;
2. the coupling integrated over the Tully-1 crossing along a straight constant-velocity path (exact: pi/2);
3. SO2 LVC from S2 (1000 Wigner trajectories, 20 fs, dt 0.5 fs): max |dP| between the schemes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_curvature_couplings.py [--ntraj 2000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from exsnn.active.decide import classical_populations
from exsnn.dynamics.curvature import curvature_couplings, pair_gaps
from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.dynamics.scattering import run_scattering
from exsnn.dynamics.settings import FSSHSettings
from exsnn.potentials.spec import load_potential
from exsnn.potentials.tully import TULLY_MODELS, TullyPotential
from exsnn.units import FS_IN_AU_TIME
from exsnn.validation.wavepacket import exact_scattering

CURVATURE = {"couplings": "curvature", "rescale": "velocity"}


def tully(ntraj: int) -> None:
    for model, k in (("tully1", 10.0), ("tully1", 20.0), ("tully2", 30.0)):
        exact = exact_scattering(TULLY_MODELS[model], k).as_dict()["T_lower"]
        nac = run_scattering(model, k, ntraj, seed=1, rescale="velocity").as_dict()
        curvature = run_scattering(model, k, ntraj, seed=1, **CURVATURE).as_dict()
        print(f"{model} k = {k:g}: T_lower exact {exact:.3f}, NAC {nac['T_lower']:.3f} +- {nac['T_lower_err']:.3f}, "
              f"curvature {curvature['T_lower']:.3f} +- {curvature['T_lower_err']:.3f}", flush=True)


def crossing_integral(dt: float = 5.0) -> None:
    potential = TullyPotential("tully1")
    velocity = 20.0 / float(potential.masses[0])
    times = np.arange(-400.0, 400.0, dt)
    x = torch.tensor(velocity * times, dtype=torch.float64).reshape(-1, 1, 1)
    out = potential.compute(x, states=torch.zeros(len(times), dtype=torch.long), nacs=True)
    nac = (out.nacs[:, 0, 0, 0] * velocity).abs().numpy()
    gaps = pair_gaps(out.energies)
    curvature = curvature_couplings(gaps[2:], gaps[1:-1], gaps[:-2], dt)[:, 0].numpy()
    print(f"Tully 1, k = 20, integrated coupling over the crossing: NAC {nac.sum() * dt:.3f}, curvature "
          f"{curvature.sum() * dt:.3f} (pi/2 = {np.pi / 2:.3f})")


def lvc(ntraj: int) -> None:
    oracle = load_potential("lvc:../shared/data/schnarc/lvc_so2_3s/LVC.template")
    ics = wigner_harmonic(*oracle.harmonic_modes(), ntraj, seed=987654)  # type: ignore[attr-defined]

    def populations(**options: str) -> np.ndarray:
        settings = FSSHSettings(dt=0.5 * FS_IN_AU_TIME, n_steps=40, seed=12345, **options)
        engine = FSSHEngine(oracle, settings)
        state = engine.initial_state(*ics, torch.full((ntraj,), 2))
        active = [state.active.numpy().copy()]
        while state.step < settings.n_steps:
            engine.step(state)
            active.append(state.active.numpy().copy())
        return classical_populations(np.array(active), 3, n_bootstrap=2)[0]

    nac, nac_velocity, curvature = populations(), populations(rescale="velocity"), populations(**CURVATURE)
    print(f"SO2 LVC from S2, {ntraj} trajectories, 20 fs: max|dP| NAC (rescale along NAC) vs NAC (velocity) "
          f"{np.abs(nac - nac_velocity).max():.3f}, vs curvature {np.abs(nac - curvature).max():.3f}; final "
          f"populations NAC {np.round(nac[-1], 3).tolist()}, curvature {np.round(curvature[-1], 3).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ntraj", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    crossing_integral()
    lvc(1000)
    tully(args.ntraj)


if __name__ == "__main__":
    main()
