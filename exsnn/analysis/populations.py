"""Classical and quantum populations of an ensemble with trajectory-bootstrap confidence bands.

Classical population of state s at time t: the fraction of trajectories whose active state is s; quantum: the mean
of |c_s|^2. The band resamples whole trajectories with replacement (Efron and Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13, percentile intervals), which keeps the correlation in time within each trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exsnn.errors import ConfigurationError


def one_hot(active: np.ndarray, n_states: int) -> np.ndarray:
    """(T, B) active states -> (T, B, N) float indicator."""
    return (np.asarray(active)[..., None] == np.arange(n_states)).astype(np.float64)


def bootstrap_counts(n_items: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_items): how often each item is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_items, n_items), minlength=n_items) for _ in range(n_bootstrap)])


def bootstrap_band(per_trajectory: np.ndarray, n_bootstrap: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band (low, high) (T, N) of the mean over trajectories of per_trajectory (T, B, N)."""
    if not 0 < confidence < 1:
        raise ConfigurationError(f"the confidence level must lie between 0 and 1, got {confidence}", where="confidence")
    B = per_trajectory.shape[1]
    if B == 0:
        raise ConfigurationError("no trajectories to average", where="trajectories")
    counts = bootstrap_counts(B, n_bootstrap, seed)
    means = np.einsum("kb,tbn->ktn", counts, per_trajectory, optimize=True) / B
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


@dataclass
class Populations:
    """Populations (T, N) over time_fs (T,) of the trajectories used, with bootstrap bands (None without)."""

    time_fs: np.ndarray
    classical: np.ndarray
    quantum: np.ndarray
    classical_low: np.ndarray | None
    classical_high: np.ndarray | None
    quantum_low: np.ndarray | None
    quantum_high: np.ndarray | None
    n_trajectories: int
    confidence: float


def ensemble_populations(time_fs: np.ndarray, active: np.ndarray, quantum: np.ndarray, keep: np.ndarray | None = None,
                         n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> Populations:
    """Populations of the trajectories in `keep` (B,) bool (default all): active (T, B), quantum |c|^2 (T, B, N)."""
    N = quantum.shape[2]
    keep = np.ones(active.shape[1], dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if not keep.any():
        raise ConfigurationError("no trajectories left to average (all excluded or none selected)", where="trajectories")
    classical_each = one_hot(active[:, keep], N)
    quantum_each = np.asarray(quantum[:, keep], dtype=np.float64)
    bands: list[np.ndarray | None] = [None] * 4
    if n_bootstrap > 0:
        bands[0], bands[1] = bootstrap_band(classical_each, n_bootstrap, confidence, seed)
        bands[2], bands[3] = bootstrap_band(quantum_each, n_bootstrap, confidence, seed + 1)
    return Populations(np.asarray(time_fs), classical_each.mean(axis=1), quantum_each.mean(axis=1), *bands,
                       n_trajectories=int(keep.sum()), confidence=confidence)


def plot_populations(populations: Populations, path: str, title: str = "", fits: dict[str, np.ndarray] | None = None,
                     state_labels: list[str] | None = None) -> str:
    """PNG of classical populations (solid, with bands), quantum populations (dashed, drawn on top and thinner so that
    neither hides the other) and fitted kinetics (dotted). state_labels: one name per state (default S0, S1, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_states = populations.classical.shape[1]
    labels = state_labels or [f"S{s}" for s in range(n_states)]
    if len(labels) != n_states:
        raise ConfigurationError(f"{len(labels)} state labels for {n_states} states", where="state labels")
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    t = populations.time_fs
    for s in range(n_states):
        # each state's line thinner than the one before: where populations coincide, every state stays visible
        width = max(3.4 - 1.1 * s, 1.2)
        line = axis.plot(t, populations.classical[:, s], lw=width, alpha=0.9, label=f"{labels[s]} (active state)")[0]
        colour = line.get_color()
        if populations.classical_low is not None and populations.classical_high is not None:
            axis.fill_between(t, populations.classical_low[:, s], populations.classical_high[:, s], color=colour, alpha=0.2, lw=0)
        axis.plot(t, populations.quantum[:, s], "--", color="k" if n_states == 1 else colour, lw=1.0, zorder=3,
                  dashes=(4, 2), label=f"{labels[s]} (|c|$^2$)")
        if fits is not None and "model" in fits:
            axis.plot(fits["time_fs"], fits["model"][:, s], ":", color="k", lw=1.2, label="kinetic fit" if s == 0 else None)
    axis.set_xlabel("time / fs")
    axis.set_ylabel("population")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7, ncol=min(n_states, 3), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    band = f"{populations.confidence:.0%} trajectory-bootstrap bands" if populations.classical_low is not None else "no bands"
    axis.set_title(title or f"{populations.n_trajectories} trajectories, {band}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
