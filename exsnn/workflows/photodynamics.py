"""Photodynamics of a molecule, start to finish: the job a photochemist runs after a model exists.

Steps (each writes a file the next one reads, all into one output folder):

1. Wigner sampling of the ground-state harmonic modes (a modes file of `exsnn frequencies`, V0.txt or
   LVC.template) at temperature T: positions and velocities (`initial_conditions.xyz`).
2. Excitation at every sampled geometry with the potential itself (energies and transition dipoles, e.g. a committee
   trained on SA-CASSCF labels): excitation energies and oscillator strengths (`excitations.json`).
3. Absorption spectrum of the ensemble (nuclear ensemble approach, Gaussian lines, bootstrap band over geometries):
   `spectrum.png`, `spectrum.txt`.
4. Fewest-switches surface hopping from the chosen excited state (`dynamics.toml`, the input of `exsnn dynamics`,
   and the run file `run.h5`).
5. Analysis (`exsnn.analysis.report.analyze_run`): classical and quantum populations with trajectory-bootstrap bands,
   a first-order kinetic fit (default: sequential S_k -> ... -> S0) with bootstrap errors on every time constant,
   hops and energy diagnostics (`populations.png`, `populations.txt`, `analysis.json`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.units import HARTREE_IN_EV


@dataclass
class PhotodynamicsJob:
    """What to simulate. potential: a potential spec with transition dipoles (model:FOLDER, lvc:FILE); modes: the
    ground-state modes file; initial_state: the excited state every trajectory starts in (1 = S1); times in fs,
    temperature in K, spectral line width (FWHM) in eV; ground_state_end_fs: end a trajectory after this long in S0
    (SHARC's killafter; it stays in S0 in the populations; None: never)."""

    potential: str
    modes: str
    n_trajectories: int = 200
    initial_state: int = 2
    dt_fs: float = 0.5
    duration_fs: float = 100.0
    temperature: float = 0.0
    seed: int = 1
    device: str = "cpu"
    fwhm_ev: float = 0.3
    kinetic_model: str = "sequential"
    molecule: str = ""  # a name for titles
    model_name: str = ""  # how titles name the potential (default: its own description)
    state_labels: list[str] = field(default_factory=list)
    n_bootstrap: int = 500
    ground_state_end_fs: float | None = None

    def check(self) -> None:
        if self.n_trajectories < 2:
            raise ConfigurationError(f"at least 2 trajectories are needed, got {self.n_trajectories}", where="--trajectories")
        if not 0 < self.dt_fs <= self.duration_fs:
            raise ConfigurationError(f"need 0 < dt <= duration, got dt {self.dt_fs} fs, duration {self.duration_fs} fs",
                                     where="--duration")
        if self.initial_state < 1:
            raise ConfigurationError(f"the initial state must be an excited state (1 = S1), got {self.initial_state}",
                                     where="--state")
        if self.ground_state_end_fs is not None and not self.ground_state_end_fs > 0:
            raise ConfigurationError(f"must be positive, got {self.ground_state_end_fs} fs", where="--ground-state-end")
        if self.fwhm_ev <= 0:
            raise ConfigurationError(f"the line width must be positive, got {self.fwhm_ev} eV", where="--fwhm")


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def dynamics_input(job: PhotodynamicsJob, initial_conditions: Path, run_file: Path) -> str:
    """The `exsnn dynamics` input (TOML text) of the surface-hopping step."""
    return "\n".join([
        "# written by exsnn's photodynamics job; rerun with: exsnn dynamics THIS_FILE --overwrite",
        "[potential]", f"spec = {_toml_string(job.potential)}", f"device = {_toml_string(job.device)}", "",
        "[initial_conditions]", 'sampling = "file"', f"file = {_toml_string(str(initial_conditions))}",
        f"n_trajectories = {job.n_trajectories}", f"initial_state = {job.initial_state}", f"seed = {job.seed}", "",
        "[integrator]", f"dt_fs = {job.dt_fs!r}", f"duration_fs = {job.duration_fs!r}",
        *([] if job.ground_state_end_fs is None else [f"ground_state_end_fs = {job.ground_state_end_fs!r}"]), "",
        "[output]", f"file = {_toml_string(str(run_file))}", "geometry_every = 2", "",
    ])


def run_photodynamics(job: PhotodynamicsJob, out: str | Path, say: Callable[[str], None] = print,
                      progress: bool = False) -> dict[str, Any]:
    """Run the job into folder `out`; return a JSON-able summary: times, populations, lifetimes, spectrum peaks and the
    files written (label -> path)."""
    from exsnn.analysis.report import analyze_run
    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.ensemble import run_ensemble
    from exsnn.photo.excitation import excitations_from_potential
    from exsnn.photo.io import write_structures
    from exsnn.photo.modes import check_same_molecule, read_modes
    from exsnn.photo.spectrum import absorption_spectrum
    from exsnn.photo.wigner import sample_wigner
    from exsnn.potentials.spec import load_potential, resolve_path

    job.check()
    modes = read_modes(job.modes)
    potential = load_potential(job.potential, Path.cwd(), job.device, numbers=modes.numbers)
    check_same_molecule(modes, potential.numbers.cpu().numpy(), f"{job.modes} vs {job.potential}")
    if job.initial_state >= potential.n_states:
        raise ConfigurationError(f"S{job.initial_state} does not exist: {potential.describe()} has {potential.n_states} states",
                                 where="--state")
    # the dynamics input lives in `out`: make a relative path in the spec absolute
    prefix, sep, argument = job.potential.partition(":")
    if sep and argument and prefix in ("model", "lvc") and not Path(argument).is_absolute():
        job = replace(job, potential=f"{prefix}:{resolve_path(argument, Path.cwd())}")  # the caller's job is left as given
    if job.state_labels and len(job.state_labels) != potential.n_states:
        raise ConfigurationError(f"{len(job.state_labels)} state names for the {potential.n_states} states of "
                                 f"{potential.describe()}", where="state_labels")
    labels = job.state_labels or [f"S{s}" for s in range(potential.n_states)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = job.molecule or "the molecule"
    model_name = job.model_name or potential.describe()
    files: dict[str, str] = {}

    sample = sample_wigner(modes, job.n_trajectories, seed=job.seed, temperature=job.temperature)
    say(f"Wigner sampling ({job.temperature:g} K) of {modes.method or 'the modes'}: {job.n_trajectories} geometries")

    excitations = excitations_from_potential(potential, sample.positions, sample.velocities)
    files["excitations (JSON)"] = str(excitations.write(out / "excitations.json"))
    dE = excitations.excitation_energies * HARTREE_IN_EV
    for k in range(dE.shape[1]):
        say(f"  {labels[k + 1]}: excitation {np.nanmean(dE[:, k]):.2f} +/- {np.nanstd(dE[:, k]):.2f} eV, "
            f"oscillator strength {np.nanmean(excitations.strengths[:, k]):.3f}")
    spectrum = absorption_spectrum(excitations.excitation_energies, excitations.strengths, fwhm_ev=job.fwhm_ev,
                                   n_bootstrap=job.n_bootstrap, seed=job.seed, state_labels=labels[1:])
    files["absorption spectrum (plot)"] = str(spectrum.plot(
        out / "spectrum.png", f"{name}: absorption spectrum of {job.n_trajectories} Wigner geometries ({job.temperature:g} K)\n"
                              f"{model_name}; Gaussian FWHM {job.fwhm_ev:g} eV"))
    files["absorption spectrum (table)"] = str(spectrum.write_table(out / "spectrum.txt"))

    initial = write_structures(out / "initial_conditions.xyz", modes.numbers, sample.positions, sample.velocities,
                               info={"initial_state": job.initial_state})
    files["initial conditions (XYZ)"] = str(initial)
    config_path = out / "dynamics.toml"
    config_path.write_text(dynamics_input(job, initial, out / "run.h5"))
    files["dynamics input (TOML)"] = str(config_path)
    say(f"surface hopping: {job.n_trajectories} trajectories from {labels[job.initial_state]}, "
        f"{job.duration_fs:g} fs at {job.dt_fs:g} fs, {potential.describe()}")
    summary = run_ensemble(load_config(config_path), overwrite=True, progress=progress)
    files["surface-hopping run (HDF5)"] = str(summary.output)
    say(f"  hops: {summary.hops} accepted, {summary.frustrated_hops} frustrated; trajectories: {summary.status_counts}")

    title = (f"{name}: {job.n_trajectories} FSSH trajectories from {labels[job.initial_state]} "
             f"(Wigner {job.temperature:g} K)\n{model_name}; 95% trajectory-bootstrap bands")
    analysis = analyze_run(summary.output, out / "populations_run", kinetic_model=job.kinetic_model,
                           n_bootstrap=job.n_bootstrap, seed=job.seed, title=title, state_labels=labels)
    files.update({k: v for k, v in analysis["files"].items()})
    result = {"job": asdict(job), "time_fs": analysis["time_fs"], "populations": analysis["populations"],
              "populations_quantum": analysis["populations_quantum"], "lifetimes": analysis["lifetimes"],
              "kinetic_model": analysis["kinetic_model"], "spectrum_peaks_ev": spectrum.peaks_ev(),
              "excitation_ev_mean": [float(x) for x in np.nanmean(dE, axis=0)],
              "trajectories_excluded": analysis["trajectories_excluded"], "state_labels": labels, "files": files}
    summary_path = out / "photodynamics.json"
    summary_path.write_text(json.dumps(result) + "\n")
    files["summary (JSON)"] = str(summary_path)
    return result


def format_populations(result: dict[str, Any], labels: list[str], every_fs: float = 10.0) -> list[str]:
    """Lines of a table: time and classical population of every state, every `every_fs`."""
    time = np.asarray(result["time_fs"])
    populations = np.asarray(result["populations"])  # (N, T)
    lines = ["  time/fs  " + "  ".join(f"{label:>6s}" for label in labels)]
    for t in np.arange(0.0, time[-1] + 1e-9, every_fs):
        k = int(np.argmin(np.abs(time - t)))
        lines.append(f"  {time[k]:7.1f}  " + "  ".join(f"{p:6.3f}" for p in populations[:, k]))
    return lines


def format_lifetimes(result: dict[str, Any]) -> list[str]:
    lines = []
    for step, fit in result["lifetimes"].items():
        if not (isinstance(fit, dict) and "tau_fs" in fit):
            continue
        if fit.get("longer_than_run") and fit.get("interval_fs"):
            low, high = fit["interval_fs"]
            lines.append(f"  {step}: tau = {fit['tau_fs']:.0f} fs, longer than the simulated time, so only loosely "
                         f"bounded (95% interval {low:.0f}-{high:.0f} fs)")
        elif fit.get("error_fs") is None:
            lines.append(f"  {step}: tau = {fit['tau_fs']:.1f} fs (no bootstrap)")
        else:
            low, high = fit["interval_fs"]
            lines.append(f"  {step}: tau = {fit['tau_fs']:.1f} +/- {fit['error_fs']:.1f} fs (95% interval {low:.1f}-{high:.1f} fs)")
    return lines
