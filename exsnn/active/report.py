"""The report of one iteration: `report.md` with the numbers and three figures (populations with bands against the
previous iteration, disagreement distributions with the thresholds drawn, where the new labels came from)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.active.decide import population_bands
from exsnn.active.measure import MEASURES, TO_REPORT, Thresholds
from exsnn.active.seam import seam_line
from exsnn.active.select import descriptor
from exsnn.data.frame import FrameArrays
from exsnn.dynamics.state import RELAXED, UNCERTAIN
from exsnn.units import EV_IN_HARTREE, HARTREE_IN_EV

UNITS = {"energies": "eV", "forces": "eV/Angstrom", "couplings": "eV/Angstrom"}


def _plot_populations(path: Path, record: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None,
                      n_states: int, iteration: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, data, style in ((f"iteration {iteration}", record, "-"), (f"iteration {iteration - 1}", previous, ":")):
        if data is None:
            continue
        p, se, _ = population_bands(data, n_states)
        t = data["time_fs"]
        for s in range(n_states):
            axis.plot(t, p[:, s], style, color=colours[s % len(colours)], label=f"S{s} ({label})")
            if style == "-":
                axis.fill_between(t, p[:, s] - 2 * se[:, s], p[:, s] + 2 * se[:, s], color=colours[s % len(colours)], alpha=0.2)
    axis.set_xlabel("time (fs)")
    axis.set_ylabel("classical population")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _log_histogram(axis: Any, data: np.ndarray, floor: float) -> None:
    """Histogram of the positive values of `data` on 40 logarithmic bins (from at least `floor`), log x axis."""
    positive = data[data > 0]
    bins = np.logspace(np.log10(max(positive.min(), floor)), np.log10(max(positive.max(), 10 * floor)), 40) if len(positive) else 10
    axis.hist(positive, bins=bins, color="0.5")
    axis.set_xscale("log")


def _plot_disagreement(path: Path, record: dict[str, np.ndarray], thresholds: Thresholds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hops = record.get("hop_disagreement")
    hops = None if hops is None else hops[np.isfinite(hops)]
    figure, axes = plt.subplots(1, 3 if hops is None else 4, figsize=(10 if hops is None else 13, 3))
    values = record["disagreement"].reshape(-1, 3)
    values = values[np.all(np.isfinite(values), axis=1)]
    for k, (axis, measure) in enumerate(zip(axes, MEASURES)):
        scale = TO_REPORT[measure]
        data = values[:, k] * scale
        _log_histogram(axis, data, floor=1e-8)
        axis.axvline(thresholds.lower[measure] * scale, color="tab:orange", label="lower")
        axis.axvline(thresholds.upper[measure] * scale, color="tab:red",
                     linestyle="-" if measure in thresholds.stop_on else ":", label="upper")
        axis.set_xlabel(f"{measure} spread ({UNITS[measure]})")
    if hops is not None:
        _log_histogram(axes[3], hops, floor=1e-12)
        axes[3].set_xlabel("hop probability spread per step")
    axes[0].set_ylabel("steps x trajectories")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_selection(path: Path, training: np.ndarray, selection: dict[str, np.ndarray], numbers: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = descriptor(training, numbers)
    mean = features.mean(axis=0)
    _, _, axes_ = np.linalg.svd(features - mean, full_matrices=False)
    project = lambda x: (x - mean) @ axes_[:2].T  # noqa: E731
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter(*project(features).T, s=6, color="0.6", label="labelled before")
    if len(selection["positions"]):
        axis.scatter(*project(descriptor(selection["positions"], numbers)).T, s=18, color="tab:red", label="selected now")
    axis.set_xlabel("distance descriptor, principal component 1 (Bohr)")
    axis.set_ylabel("principal component 2 (Bohr)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def time_constants_line(lifetimes: dict[str, dict[str, Any]]) -> str:
    """'S2->S1 12.3 +- 1.1 fs, ...' from a Decision's lifetimes; a time constant longer than the run is flagged."""
    return ", ".join(f"{step} {v['tau_fs']:.1f} +- {v['error_fs']:.1f} fs"
                     + (" (longer than the run: loosely bound)" if v.get("longer_than_run") else "")
                     for step, v in lifetimes.items())


def hop_spread_summary(record: dict[str, np.ndarray]) -> dict[str, float] | None:
    """Median, 95th percentile and max of the hop-probability spread over recorded steps, and the share of steps
    above 0.01; None without that record (curvature couplings, older records)."""
    values = record.get("hop_disagreement")
    values = None if values is None else values[np.isfinite(values)]
    if values is None or len(values) == 0:
        return None
    return {"median": float(np.median(values)), "p95": float(np.quantile(values, 0.95)), "max": float(values.max()),
            "share_above_0.01": float((values > 0.01).mean())}


#: a label counts as above its trajectory's total energy only beyond this margin (Hartree; 0.1 eV), which covers the
#: integration's energy drift and the committee's energy error at the start of the trajectory
TOTAL_ENERGY_MARGIN = 0.1 * EV_IN_HARTREE


def labels_above_total_energy(arrays: FrameArrays, tag_iteration: int) -> dict[str, Any] | None:
    """Of the labels a dynamics phase added (provenance iteration `tag_iteration`, with the trajectory's active state
    and total energy), how many have an oracle energy of that active state above the trajectory's total energy: the
    trajectory could only get there because the committee's surfaces were too low (a hole). None when no such label
    carries the total energy (records made before it was kept)."""
    excess = []
    for k in range(arrays.n_frames):
        tag = json.loads(arrays.provenance[k]).get("campaign", {})
        if tag.get("iteration") != tag_iteration or "total_energy" not in tag or "active" not in tag:
            continue
        energy = arrays.energies[k, tag["active"]]
        if np.isfinite(energy):
            excess.append(float(energy - tag["total_energy"]))
    if not excess:
        return None
    above = np.array(excess) > TOTAL_ENERGY_MARGIN
    return {"n": len(excess), "above": int(above.sum()),
            "largest_excess_eV": round(max(excess) * HARTREE_IN_EV, 3) if above.any() else None}


def write_report(folder: Path, iteration: int, summary: dict[str, Any], record: dict[str, np.ndarray],
                 previous: dict[str, np.ndarray] | None, thresholds: Thresholds, selection: dict[str, np.ndarray] | None,
                 training_positions: np.ndarray, numbers: np.ndarray, n_states: int, title: str) -> None:
    """report.md + populations.png, disagreement.png, selection.png in `folder`; summary.json with the numbers."""
    _plot_populations(folder / "populations.png", record, previous, n_states, iteration, title)
    _plot_disagreement(folder / "disagreement.png", record, thresholds)
    if selection is not None:
        _plot_selection(folder / "selection.png", training_positions, selection, numbers)
    status = record["status"][-1]
    p, se, spread = population_bands(record, n_states)
    lines = [f"# Campaign iteration {iteration}", "", title, "",
             f"- labels in the dataset: {summary['n_labels']} ({summary['n_test']} held out for testing; the test "
             f"errors below are on the {summary.get('n_test_of_errors', summary['n_test'])} of them labelled before "
             f"this iteration's selection)",
             f"- trajectories: {len(status)}, reached the end without crossing an upper threshold: "
             f"{int((status != UNCERTAIN).sum())} (of them relaxed to S0 before the end: {int((status == RELAXED).sum())}), "
             f"stopped as uncertain: {int((status == UNCERTAIN).sum())}",
             f"- thresholds ({thresholds.source}):"]
    for measure in MEASURES:
        effect = "stops a trajectory" if measure in thresholds.stop_on else "does not stop trajectories"
        lines.append(f"  - {measure}: lower {thresholds.lower[measure] * TO_REPORT[measure]:.4g}, upper "
                     f"{thresholds.upper[measure] * TO_REPORT[measure]:.4g} {UNITS[measure]} ({effect})")
    hop_summary = hop_spread_summary(record)
    if hop_summary is not None:
        summary["hop_probability_spread"] = hop_summary
        lines.append(f"- spread of the members' probabilities of hopping out of the active state, per step (recorded, "
                     f"not thresholded): median {hop_summary['median']:.2g}, 95th percentile {hop_summary['p95']:.2g}, "
                     f"max {hop_summary['max']:.2g}; steps above 0.01: {hop_summary['share_above_0.01']:.1%}")
    holes = summary.get("labels_above_total_energy")
    if holes is not None:
        largest = f" (by up to {holes['largest_excess_eV']:.2f} eV)" if holes["above"] else ""
        lines.append(f"- new labels whose oracle energy of the active state lies above their trajectory's total energy, "
                     f"i.e. where the committee's surfaces were too low: {holes['above']} of {holes['n']}{largest}")
    if summary.get("seam_check"):
        lines.append(seam_line(summary["seam_check"]))
    lines += ["", "## Test errors of the committee mean (held-out frames from earlier dynamics)", ""]
    for key, values in summary.get("test_errors", {}).items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    what = "trajectory bootstrap" if spread is None else "trajectory bootstrap and committee spread combined"
    lines += ["", f"## Final populations (classical, +- standard error: {what})", ""]
    lines.append(", ".join(f"S{s} {p[-1, s]:.3f} +- {se[-1, s]:.3f}" for s in range(n_states)))
    if spread is not None:
        lines.append("")
        noise = ("without the members' own sampling noise" if "member_active" in record
                 else "their sampling noise included")
        lines.append(f"committee spread alone (std of the members' own ensembles, {noise}): "
                     + ", ".join(f"S{s} {spread[-1, s]:.3f}" for s in range(n_states)))
    decision = summary.get("decision", {})
    if decision.get("lifetimes"):
        lines += ["", "## Fitted time constants ([stopping] kinetics; +- bootstrap and committee spread combined)", ""]
        lines.append(time_constants_line(decision["lifetimes"]))
    lines += ["", "## Decision", "", json.dumps(decision)]
    if selection is not None:
        lines += ["", f"Selected {len(selection['positions'])} of {int(selection['candidates'])} candidate frames "
                      "(per-trajectory maxima, then farthest-point diversity)."]
    lines += ["", "![populations](populations.png)", "", "![disagreement](disagreement.png)"]
    if selection is not None:
        lines += ["", "![selection](selection.png)"]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
