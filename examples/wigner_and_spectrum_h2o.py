"""Water from scratch to its absorption spectrum and initial conditions, with PySCF (TDA-HF/STO-3G by default).

Optimises H2O (geomeTRIC), computes its harmonic modes (analytic Hessian), samples a thermal Wigner ensemble,
computes the excited states of every geometry, chooses initial states by an energy window and f/dE^2, and writes
the nuclear-ensemble spectrum (PNG + table) with a bootstrap band. Everything is seeded.

    .venv/bin/python examples/wigner_and_spectrum_h2o.py [--samples 100] [--temperature 300] [--output exsnn-output/h2o]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from exsnn.photo.excitation import compute_excitations, select_states
from exsnn.photo.io import write_structures
from exsnn.photo.spectrum import absorption_spectrum
from exsnn.photo.structure import ground_state_settings, harmonic_analysis, optimize_geometry
from exsnn.photo.wigner import sample_wigner
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV

WATER = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]) * ANGSTROM_IN_BOHR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground", default="hf/sto-3g", help="ground-state method for structure and modes")
    parser.add_argument("--excited", default="tda-hf/sto-3g,states=4", help="excited-state method (S0 + 3 singlets)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--executor", default="serial", help="serial, local[:N], dask-local[:N]")
    parser.add_argument("--output", default="exsnn-output/h2o")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    numbers = np.array([8, 1, 1])
    settings = ground_state_settings(args.ground)
    optimized = optimize_geometry(numbers, WATER, settings)
    modes = harmonic_analysis(numbers, optimized.positions, settings)
    modes.write(out / "modes.json")
    print(f"{modes.method}: E = {optimized.energy:.8f} Hartree, frequencies (cm^-1) "
          + " ".join(f"{w:.1f}" for w in modes.frequencies_cm1))

    sample = sample_wigner(modes, args.samples, seed=args.seed, temperature=args.temperature)
    sample.write_xyz(out / "wigner.xyz", modes.method)
    excitations = compute_excitations(numbers, sample.positions, parse_qm_spec(args.excited, nacs="none"), sample.velocities,
                                      executor=args.executor)
    excitations.write(out / "excitations.json")
    dE = excitations.excitation_energies
    print(
        "mean vertical excitation energies (eV): "
        + " ".join(f"S{k + 1} {e:.3f}" for k, e in enumerate(np.nanmean(dE, 0) * HARTREE_IN_EV))
    )

    selection = select_states(dE, excitations.strengths, window_ev=(8.0, 14.0), stochastic=True, seed=args.seed)
    for state in sorted(set(selection.state.tolist())):
        chosen = selection.geometry[selection.state == state]
        path = write_structures(
            out / f"initial_conditions_S{state}.xyz",
            numbers,
            sample.positions[chosen],
            sample.velocities[chosen],
            info={"initial_state": state},
        )
        print(f"S{state}: {len(chosen)} initial conditions -> {path}")

    ok = np.all(np.isfinite(excitations.energies), axis=1)
    spectrum = absorption_spectrum(dE[ok], excitations.strengths[ok], fwhm_ev=0.3, n_bootstrap=500, seed=args.seed)
    print(
        f"spectrum: {spectrum.plot(out / 'spectrum.png')}, {spectrum.write_table(out / 'spectrum.txt')}; band maxima (eV) "
        + " ".join(f"{label} {e:.2f}" for label, e in zip(spectrum.state_labels, spectrum.peaks_ev()))
    )


if __name__ == "__main__":
    main()
