"""`analyze_run`: populations with bands, kinetic fits with bootstrap errors, hops and energy diagnostics of a run
file in one call, as a JSON-able dict, and (with a prefix) the plots, tables and exports a person looks at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.analysis.diagnostics import Thresholds, check_trajectories
from exsnn.analysis.hops import hop_table, write_hop_geometries
from exsnn.analysis.kinetics import KineticNetwork, bootstrap_kinetics, parse_network, sequential_network
from exsnn.analysis.populations import ensemble_populations, one_hot, plot_populations
from exsnn.analysis.records import read_run, trajectory_selection
from exsnn.errors import ConfigurationError

FIT_TARGETS = ("classical", "quantum")
HOP_GEOMETRIES_RECORDED = "recorded at each hop (/hops/positions, /hops/gap)"
HOP_GEOMETRIES_FROM_SNAPSHOTS = (
    "approximate: the run file has no /hops/positions (written by an older exsnn); hop geometries are the last "
    "geometry snapshot at or before each hop, and gaps are NaN at steps that were not recorded"
)


def _network(model: str | None, n_states: int, initial: np.ndarray) -> KineticNetwork | None:
    if model is not None and model.strip().lower() == "none":
        return None
    if model is not None and model.strip().lower() != "sequential":
        return parse_network(model, n_states)
    start = int(np.argmax(initial))
    return sequential_network(start, n_states) if start > 0 else None


def _list(array: np.ndarray | None) -> list[list[float]] | None:
    """(T, N) -> one list per state."""
    return None if array is None else [[float(x) for x in array[:, s]] for s in range(array.shape[1])]


def analyze_run(path: str | Path, prefix: str | Path | None = None, *, trajectories: list[int] | None = None,
                kinetic_model: str | None = None, fit_to: str = "classical", n_bootstrap: int = 1000,
                n_bootstrap_fit: int = 200, confidence: float = 0.95, seed: int = 0,
                thresholds: Thresholds | None = None, include_excluded: bool = False,
                shnitsel: str | Path | None = None, ase: str | Path | None = None, title: str | None = None,
                state_labels: list[str] | None = None) -> dict[str, Any]:
    """Analyse a run file (written by `exsnn dynamics`).

    trajectories: ids to analyse (default all); trajectories failing the energy diagnostics (`thresholds`) or
    stopped as failed are left out of every average unless include_excluded. kinetic_model: "sequential" (default:
    S_i -> ... -> S0 from the initially populated state), a network spec such as "S2->S1, S1->S0", or "none";
    fitted to the classical or quantum populations (fit_to), with n_bootstrap_fit trajectory resamples.
    prefix: write PREFIX_populations.png/.txt, PREFIX_hops.txt, PREFIX_hops.xyz, PREFIX_diagnostics.txt and
    PREFIX_analysis.json. shnitsel / ase: folders to export the analysed trajectories to. title: the population
    plot's title (default: the run file, trajectories and bands); state_labels: names of the states in the plot.

    Returns a JSON-able dict: time_fs (T,), populations and populations_quantum (one list per state), their
    bands (populations_low/high, populations_quantum_low/high), lifetimes ({"S2->S1": {"tau_fs", "error_fs",
    "interval_fs"}}), the kinetic model's populations, hops (summary, rows and `geometries_source`: whether the hop
    geometries and gaps are the exact ones the run recorded or, for older run files, approximated), diagnostics (per trajectory, with
    reasons), the trajectories used and excluded, and the files written."""
    thresholds = thresholds or Thresholds()
    if fit_to not in FIT_TARGETS:
        raise ConfigurationError(f"fit_to must be one of {', '.join(FIT_TARGETS)}, got {fit_to!r}", where="fit")
    records = read_run(path)
    selected = trajectory_selection(records, trajectories)
    hops = hop_table(records)
    checks = check_trajectories(records, hops, thresholds)
    excluded = np.array([c.excluded for c in checks]) & selected
    keep = selected if include_excluded else selected & ~excluded
    populations = ensemble_populations(records.time_fs, records.active, records.quantum, keep, n_bootstrap, confidence, seed)
    network = _network(kinetic_model, records.n_states, populations.classical[0])
    lifetimes: dict[str, Any] = {}
    fit_model = None
    if network is not None:
        per_trajectory = one_hot(records.active[:, keep], records.n_states) if fit_to == "classical" else records.quantum[:, keep]
        fit = bootstrap_kinetics(records.time_fs, per_trajectory, network, n_bootstrap_fit, confidence, seed + 2)
        lifetimes = fit.as_dict()
        fit_model = fit.model
    kept_hops = hops.subset(np.isin(hops.trajectory, np.flatnonzero(keep)))
    result: dict[str, Any] = {
        "run": str(path),
        "time_fs": [float(t) for t in records.time_fs],
        "populations": _list(populations.classical),
        "populations_low": _list(populations.classical_low),
        "populations_high": _list(populations.classical_high),
        "populations_quantum": _list(populations.quantum),
        "populations_quantum_low": _list(populations.quantum_low),
        "populations_quantum_high": _list(populations.quantum_high),
        "confidence": confidence,
        "lifetimes": lifetimes,
        "kinetic_model": None if network is None else ", ".join(network.labels),
        "kinetic_fit_to": fit_to,
        "kinetic_model_populations": _list(fit_model),
        "hops": {**kept_hops.summary(records.n_states), "events": kept_hops.rows(),
                 "geometries_source": HOP_GEOMETRIES_RECORDED if records.hop_geometries else HOP_GEOMETRIES_FROM_SNAPSHOTS},
        "diagnostics": {"thresholds": thresholds.__dict__, "trajectories": [c.as_dict() for c in checks if selected[c.trajectory]]},
        "trajectories_used": [int(b) for b in np.flatnonzero(keep)],
        "trajectories_excluded": {int(c.trajectory): c.reasons for c in checks if excluded[c.trajectory]},
        "files": {},
    }
    files: dict[str, str] = result["files"]
    if shnitsel is not None:
        from exsnn.analysis.export import export_shnitsel

        files["shnitsel-tools folder"] = str(export_shnitsel(records, shnitsel, keep)[0].parent) if keep.any() else str(shnitsel)
    if ase is not None:
        from exsnn.analysis.export import export_ase

        files["ASE trajectories"] = str(export_ase(records, ase, keep)[0].parent) if keep.any() else str(ase)
    if prefix is not None:
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        fits = None if fit_model is None else {"time_fs": records.time_fs, "model": fit_model}
        title = title or f"{Path(path).name}: {populations.n_trajectories} trajectories, {confidence:.0%} bootstrap bands"
        files["population plot"] = plot_populations(populations, f"{prefix}_populations.png", title, fits, state_labels)
        n = records.n_states
        header = ("time_fs " + " ".join(f"S{s}_classical S{s}_low S{s}_high" for s in range(n)) + " "
                  + " ".join(f"S{s}_quantum" for s in range(n)))
        columns = [records.time_fs]
        for s in range(n):
            columns += [populations.classical[:, s],
                        populations.classical_low[:, s] if populations.classical_low is not None else populations.classical[:, s],
                        populations.classical_high[:, s] if populations.classical_high is not None else populations.classical[:, s]]
        columns += [populations.quantum[:, s] for s in range(n)]
        table = Path(f"{prefix}_populations.txt")
        np.savetxt(table, np.column_stack(columns), header=header, fmt="%.6f")
        files["population table"] = str(table)
        files["hop table"] = str(kept_hops.write_table(f"{prefix}_hops.txt"))
        xyz, exact, approximate = write_hop_geometries(records, kept_hops, f"{prefix}_hops.xyz")
        files["hop geometries"] = str(xyz)
        result["hops"]["geometries_exact"] = exact
        result["hops"]["geometries_from_earlier_snapshot"] = approximate
        lines = ["# trajectory status drift_eV max_step_eV max_hop_jump_eV excluded reasons"]
        for check in checks:
            if selected[check.trajectory]:
                lines.append(f"{check.trajectory} {check.status.replace(' ', '_')} {check.drift_ev:.4f} {check.max_step_ev:.4f} "
                             f"{check.max_hop_jump_ev:.4f} {int(check.excluded)} {'; '.join(check.reasons)}")
        diagnostics = Path(f"{prefix}_diagnostics.txt")
        diagnostics.write_text("\n".join(lines) + "\n")
        files["diagnostics"] = str(diagnostics)
        summary = Path(f"{prefix}_analysis.json")
        files["analysis (JSON)"] = str(summary)
        summary.write_text(json.dumps(result) + "\n")
    return result
