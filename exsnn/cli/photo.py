"""`exsnn optimize | frequencies | sample | excite | spectrum`: the steps before a surface-hopping run, seeded and
non-interactive; and the options of `exsnn analyze` (`add_analyze_options`, `run_analyze`) for after it.

    exsnn optimize GEOMETRY --method hf/sto-3g -o OPT.xyz
    exsnn frequencies OPT.xyz --method hf/sto-3g -o MODES.json
    exsnn sample MODES.json|V0.txt|LVC.template -n 100 --seed 1 [--temperature 300] -o WIGNER.xyz
    exsnn excite WIGNER.xyz --method tda-hf/sto-3g,states=4 -o EXCITE/ [--window 5:8] [--states 1,2] [--stochastic]
        (EXCITE/initial_conditions.xyz: every selected frame with its initial_state, for exsnn dynamics with
        initial_state = "file"; EXCITE/initial_conditions_S<k>.xyz: the frames of one state)
    exsnn spectrum EXCITE/excitations.json -o SPECTRUM [--fwhm 0.2] [--shape gaussian|lorentzian]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exsnn.cli.output import print_json


def _pair(text: str, option: str) -> tuple[float, float]:
    from exsnn.errors import ConfigurationError

    low, colon, high = text.partition(":")
    try:
        if not colon:
            raise ValueError
        return float(low), float(high)
    except ValueError:
        raise ConfigurationError(f"expected LOW:HIGH (two numbers), got {text!r}", source=option) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("optimize", help="optimise the ground-state geometry with PySCF (geomeTRIC or pyberny)")
    p.add_argument("geometry", help="XYZ (Angstrom) or exsnn HDF5 file; its first frame is the start")
    p.add_argument("--method", required=True, help="hf/sto-3g, b3lyp/6-31g*, casscf(2,2)/sto-3g,states=2, ... (options may follow)")
    p.add_argument("-o", "--output", required=True, help="optimised structure (XYZ, Angstrom)")
    p.add_argument("--optimizer", default="geometric", choices=("geometric", "berny"))
    p.add_argument("--convergence", default="tight", choices=("tight", "normal"))
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run_optimize)

    p = subparsers.add_parser("frequencies", help="harmonic frequencies and normal modes (JSON modes file)")
    p.add_argument("geometry", help="an optimised structure (XYZ or exsnn HDF5; first frame)")
    p.add_argument("--method", required=True, help="as for optimize")
    p.add_argument("-o", "--output", required=True, help="modes file (JSON)")
    p.add_argument("--optimize", action="store_true", help="optimise the structure first")
    p.add_argument("--hessian", default="auto", choices=("auto", "analytic", "numerical"),
                   help="auto: analytic for RHF/RKS, finite differences of analytic gradients otherwise")
    p.add_argument("--step", type=float, default=5e-3, help="finite-difference step, Bohr")
    p.add_argument("--allow-imaginary", action="store_true", help="leave imaginary modes out (and list them) instead of failing")
    p.add_argument("--executor", default="serial", help="serial, local[:N], dask-local[:N], dask:ADDRESS (numerical Hessians)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_frequencies)

    p = subparsers.add_parser("sample", help="Wigner sampling of harmonic modes at 0 K or a temperature")
    p.add_argument("modes", help="modes file (JSON), SHARC V0.txt or LVC.template")
    p.add_argument("-n", "--samples", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--temperature", type=float, default=0.0, help="Kelvin (default 0: the vibrational ground state)")
    p.add_argument("--cutoff", type=float, default=10.0, help="modes below this frequency (cm^-1) are not sampled")
    p.add_argument("-o", "--output", required=True, help="extended XYZ with velocities (what exsnn dynamics reads)")
    p.set_defaults(run=run_sample)

    p = subparsers.add_parser("excite", help="excited states per geometry and the choice of initial states")
    p.add_argument("geometries", help="XYZ/extxyz or exsnn HDF5 (e.g. from exsnn sample), or an excitations.json to select again")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--method", help="PySCF spec with states, e.g. tda-hf/sto-3g,states=4")
    source.add_argument("--potential", help="a potential spec with transition dipoles, e.g. lvc:LVC.template")
    p.add_argument("-o", "--output", required=True,
                   help="folder for excitations.json, selection.json, initial_conditions_S<k>.xyz per state and "
                        "initial_conditions.xyz with every selected frame and its initial_state")
    p.add_argument("--window", help="LOW:HIGH excitation energy window, eV")
    p.add_argument("--states", help="comma-separated excited states to start in (1 = S1)")
    p.add_argument("--stochastic", action="store_true", help="accept with probability (f/dE^2) / ensemble maximum")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pulse", help="promoted-density sampling for a pulse OMEGA_EV:FWHM_FS[:ENVELOPE] (promdens)")
    p.add_argument("--pulse-samples", type=int, default=100)
    p.add_argument("--executor", default="serial", help="serial, local[:N], dask-local[:N], dask:ADDRESS")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run_excite)

    p = subparsers.add_parser("spectrum", help="nuclear-ensemble absorption spectrum with a bootstrap band (PNG + table)")
    p.add_argument("excitations", help="excitations.json written by exsnn excite")
    p.add_argument("-o", "--output", required=True, help="prefix: PREFIX.png, PREFIX.txt")
    p.add_argument("--fwhm", type=float, default=0.2, help="broadening FWHM, eV")
    p.add_argument("--shape", default="gaussian", choices=("gaussian", "lorentzian"))
    p.add_argument("--range", help="LOW:HIGH energy range, eV (default: the lines +- 3 FWHM)")
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--bootstrap", type=int, default=500, help="resamples of the geometries for the band (0: none)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy-factor", action="store_true", help="weight each line by dE/E (Crespo-Otero and Barbatti)")
    p.set_defaults(run=run_spectrum)


def _first_structure(path: str) -> tuple[Any, Any]:
    from exsnn.photo.io import read_geometries

    numbers, positions, _ = read_geometries(path)
    return numbers, positions[0]


def run_optimize(args: argparse.Namespace) -> int:
    from exsnn.photo.io import write_structures
    from exsnn.photo.structure import ground_state_settings, optimize_geometry

    settings = ground_state_settings(args.method)
    numbers, positions = _first_structure(args.geometry)
    result = optimize_geometry(numbers, positions, settings, args.optimizer, args.max_steps, args.convergence)
    write_structures(args.output, numbers, result.positions[None],
                     info={"method": result.method, "energy_hartree": result.energy, "optimizer": result.optimizer})
    summary = {"output": str(args.output), "energy_hartree": result.energy, "steps": result.steps,
               "max_gradient": float(abs(result.gradient).max()), "method": result.method}
    if args.json:
        print_json(summary)
    else:
        print(f"exsnn optimize: {result.method} converged in {result.steps} gradients ({result.optimizer}), "
              f"E = {result.energy:.10f} Hartree, max |gradient| {summary['max_gradient']:.1e} Hartree/Bohr")
        print(f"  structure: {args.output}")
    return 0


def run_frequencies(args: argparse.Namespace) -> int:
    from exsnn.photo.structure import ground_state_settings, harmonic_analysis, optimize_geometry

    settings = ground_state_settings(args.method)
    numbers, positions = _first_structure(args.geometry)
    if args.optimize:
        positions = optimize_geometry(numbers, positions, settings).positions
    modes = harmonic_analysis(numbers, positions, settings, hessian=args.hessian, allow_imaginary=args.allow_imaginary,
                              step=args.step, executor=args.executor)
    modes.write(args.output)
    if args.json:
        print_json({"output": str(args.output), "frequencies_cm1": modes.frequencies_cm1.tolist(),
                    "linear": modes.linear, "left_out": modes.left_out})
        return 0
    print(f"exsnn frequencies: {modes.method}, {modes.source}; {'linear, ' if modes.linear else ''}{len(modes.frequencies)} modes")
    print("  frequencies (cm^-1): " + " ".join(f"{w:.1f}" for w in modes.frequencies_cm1))
    for entry in modes.left_out:
        print(f"  left out: {abs(entry['frequency_cm1']):.1f}i cm^-1 ({entry['reason']})")
    print(f"  modes: {args.output}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from exsnn.photo.modes import read_modes
    from exsnn.photo.wigner import sample_wigner

    modes = read_modes(args.modes)
    sample = sample_wigner(modes, args.samples, args.seed, args.temperature, args.cutoff)
    sample.write_xyz(args.output, modes.method)
    print(f"exsnn sample: {args.samples} Wigner samples at {args.temperature:g} K (seed {args.seed}) of "
          f"{int(sample.sampled.sum())} modes -> {args.output}")
    for note in sample.notes:
        print(f"  {note}")
    return 0


def _states(text: str | None) -> list[int] | None:
    from exsnn.errors import ConfigurationError

    if text is None:
        return None
    try:
        return [int(part.strip().upper().lstrip("S")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"expected comma-separated states such as 1,2 or S1,S2, got {text!r}", source="--states") from None


def run_excite(args: argparse.Namespace) -> int:
    import numpy as np

    from exsnn.errors import ConfigurationError
    from exsnn.photo.excitation import compute_excitations, excitations_from_potential, read_excitations, select_states
    from exsnn.photo.io import read_geometries, write_structures
    from exsnn.units import HARTREE_IN_EV

    window = None if args.window is None else _pair(args.window, "--window")
    states = _states(args.states)
    if window is not None and not window[0] < window[1]:
        raise ConfigurationError(f"the energy window must have LOW < HIGH, got {args.window}", source="--window")
    output = Path(args.output)
    if args.geometries.endswith(".json"):
        excitations = read_excitations(args.geometries)
    else:
        numbers, positions, velocities = read_geometries(args.geometries)
        if args.potential is not None:
            from exsnn.potentials.spec import load_potential

            potential = load_potential(args.potential, Path.cwd(), args.device, numbers=numbers)
            excitations = excitations_from_potential(potential, positions, velocities)
        elif args.method is not None:
            from exsnn.qm.settings import parse_qm_spec

            excitations = compute_excitations(numbers, positions, parse_qm_spec(args.method, nacs="none"), velocities, args.executor)
        else:
            raise ConfigurationError("give --method (PySCF) or --potential to compute the excited states", source="exsnn excite")
    output.mkdir(parents=True, exist_ok=True)
    excitations.write(output / "excitations.json")
    dE = excitations.excitation_energies
    selection = select_states(dE, excitations.strengths, window, states, args.stochastic, args.seed)
    (output / "selection.json").write_text(json.dumps({"criteria": selection.criteria, "seed": args.seed,
                                                       "initial_conditions": selection.rows()}) + "\n")
    velocities = excitations.velocities if excitations.velocities is not None else np.zeros_like(excitations.positions)
    written = []
    for state in sorted(set(selection.state.tolist())):
        rows = np.flatnonzero(selection.state == state)
        path = output / f"initial_conditions_S{state}.xyz"
        geometries = selection.geometry[rows]
        write_structures(path, excitations.numbers, excitations.positions[geometries], velocities[geometries],
                         info={"initial_state": state},
                         per_frame=[{"geometry": int(g), "excitation_eV": float(dE[g, state - 1] * HARTREE_IN_EV)} for g in geometries])
        written.append((state, len(rows), path))
    combined = None
    if len(selection):  # every selected (geometry, state) in one file, each frame with its own initial_state
        combined = write_structures(
            output / "initial_conditions.xyz", excitations.numbers, excitations.positions[selection.geometry],
            velocities[selection.geometry],
            per_frame=[{"initial_state": int(s), "geometry": int(g), "excitation_eV": float(dE[g, s - 1] * HARTREE_IN_EV)}
                       for g, s in zip(selection.geometry, selection.state)])
    print(f"exsnn excite: {len(excitations.positions)} geometries ({excitations.method}), {len(excitations.failures)} failed")
    print("  mean excitation energies (eV): " + " ".join(f"S{k + 1} {e:.3f}" for k, e in enumerate(np.nanmean(dE, axis=0) * HARTREE_IN_EV)))
    strengths = np.nanmean(excitations.strengths, axis=0)
    print("  mean oscillator strengths:     " + " ".join(f"S{k + 1} {f:.4f}" for k, f in enumerate(strengths)))
    print(f"  selected {len(selection)} initial conditions ({selection.criteria})")
    for state, count, path in written:
        print(f"    S{state}: {count} -> {path}")
    if combined is not None:
        print(f"    all states: {len(selection)} -> {combined}  (initial_state = \"file\" in exsnn dynamics starts each in its own)")
    if args.pulse is not None:
        from exsnn.photo.promoted import promoted_density

        parts = args.pulse.split(":")
        try:
            omega_ev, fwhm_fs = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise ConfigurationError(
                f"expected OMEGA_EV:FWHM_FS[:ENVELOPE], got {args.pulse!r}", source="--pulse"
            ) from None
        envelope = parts[2] if len(parts) > 2 else "gauss"
        sample = promoted_density(
            dE,
            excitations.transition_dipoles,
            args.pulse_samples,
            omega_ev / HARTREE_IN_EV,
            fwhm_fs,
            envelope,
            seed=args.seed,
        )
        rows_out = [
            {"geometry": int(g), "state": int(s), "excitation_time_fs": float(t)}
            for g, s, t in zip(sample.geometry, sample.state, sample.time_fs)
        ]
        (output / "promoted_density.json").write_text(
            json.dumps({"pulse": args.pulse, "seed": args.seed, "samples": rows_out}) + "\n"
        )
        print(f"  promoted-density sampling: {len(rows_out)} samples -> {output / 'promoted_density.json'}")
    print(f"  excitations: {output / 'excitations.json'}  (exsnn spectrum {output / 'excitations.json'} -o SPECTRUM)")
    return 0


def run_spectrum(args: argparse.Namespace) -> int:
    import numpy as np

    from exsnn.photo.excitation import read_excitations
    from exsnn.photo.spectrum import absorption_spectrum

    excitations = read_excitations(args.excitations)
    ok = np.all(np.isfinite(excitations.energies), axis=1)
    energy_range = None if args.range is None else _pair(args.range, "--range")
    spectrum = absorption_spectrum(
        excitations.excitation_energies[ok],
        excitations.strengths[ok],
        args.fwhm,
        args.shape,
        energy_range,
        args.points,
        args.bootstrap,
        args.confidence,
        args.seed,
        args.energy_factor,
    )
    table = spectrum.write_table(f"{args.output}.txt")
    png = spectrum.plot(f"{args.output}.png", title=f"{excitations.method}: {int(ok.sum())} geometries")
    print(
        f"exsnn spectrum: {int(ok.sum())} geometries, {args.shape} FWHM {args.fwhm:g} eV; "
        f"band maxima (eV): "
        + " ".join(f"{label} {e:.2f}" for label, e in zip(spectrum.state_labels, spectrum.peaks_ev()))
    )
    print(f"  plot: {png}\n  table: {table}")
    return 0


# --------------------------------------------------------------------------------- exsnn analyze (for exsnn.cli.main)


def add_analyze_options(p: argparse.ArgumentParser) -> None:
    """The options of `exsnn analyze RUN.h5` (the parser that exsnn.cli registers for it)."""
    p.add_argument("--trajectories", help="comma-separated trajectory ids or ranges A-B to analyse (default all)")
    p.add_argument(
        "--model", default="sequential", help="kinetic model: sequential, none, or steps such as 'S2->S1, S1->S0'"
    )
    p.add_argument(
        "--fit",
        default="classical",
        choices=("classical", "quantum"),
        help="populations the kinetic model is fitted to",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="trajectory resamples for the population bands")
    p.add_argument("--fit-bootstrap", type=int, default=200, help="trajectory resamples for the time-constant errors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-drift", type=float, default=0.2, help="total-energy drift filter, eV")
    p.add_argument("--max-step", type=float, default=0.1, help="total-energy jump between records filter, eV")
    p.add_argument("--max-hop-jump", type=float, default=1.0, help="potential-energy jump at a hop filter, eV")
    p.add_argument(
        "--include-excluded", action="store_true", help="keep trajectories that fail the filters in the averages"
    )
    p.add_argument("--shnitsel", metavar="FOLDER", help="export the trajectories for shnitsel-tools (NetCDF)")
    p.add_argument("--ase", metavar="FOLDER", help="export the trajectories as ASE .traj files")
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON object")


def _trajectory_ids(text: str | None) -> list[int] | None:
    from exsnn.errors import ConfigurationError

    if text is None:
        return None
    ids: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            ids += list(range(int(first), int(last) + 1)) if dash else [int(first)]
    except ValueError:
        raise ConfigurationError(
            f"expected ids and ranges such as 0-9,12, got {text!r}", source="--trajectories"
        ) from None
    return ids


def run_analyze(args: argparse.Namespace) -> int:
    """`exsnn analyze RUN.h5 [--output PREFIX] ...` with the options of `add_analyze_options`."""
    from exsnn.analysis.diagnostics import Thresholds
    from exsnn.analysis.report import HOP_GEOMETRIES_RECORDED, analyze_run

    prefix = args.output if args.output is not None else str(Path(args.run_file).with_suffix(""))
    result = analyze_run(
        args.run_file,
        prefix,
        trajectories=_trajectory_ids(args.trajectories),
        kinetic_model=args.model,
        fit_to=args.fit,
        n_bootstrap=args.bootstrap,
        n_bootstrap_fit=args.fit_bootstrap,
        seed=args.seed,
        thresholds=Thresholds(args.max_drift, args.max_step, args.max_hop_jump),
        include_excluded=args.include_excluded,
        shnitsel=args.shnitsel,
        ase=args.ase,
    )
    if args.json:
        print_json(result)
        return 0
    final = [p[-1] for p in result["populations"]]
    print(
        f"exsnn analyze: {len(result['trajectories_used'])} trajectories used, {len(result['trajectories_excluded'])} excluded"
    )
    print("  final populations (active state): " + "  ".join(f"S{k} {p:.3f}" for k, p in enumerate(final)))
    for label, value in result["lifetimes"].items():
        error = "" if value["error_fs"] is None else f" +- {value['error_fs']:.1f}"
        note = " (longer than the run: loosely bound)" if value["longer_than_run"] else ""
        print(f"  {label}: tau = {value['tau_fs']:.1f}{error} fs{note}")
    hops = result["hops"]
    print(f"  hops: {hops['accepted']} accepted, {hops['frustrated']} frustrated, {hops['forced']} forced to S0")
    if hops["geometries_source"] != HOP_GEOMETRIES_RECORDED:
        print(f"  hop geometries: {hops['geometries_source']}")
    for trajectory, reasons in result["trajectories_excluded"].items():
        print(f"  excluded trajectory {trajectory}: {'; '.join(reasons)}")
    for label, path in result["files"].items():
        print(f"{label}: {path}")
    return 0
