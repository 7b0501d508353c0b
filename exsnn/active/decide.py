"""Populations with bands, and the rules that end a campaign.

Classical populations P_s(t) (fraction of trajectories in state s) over the trajectories still running at t (a
trajectory stopped for uncertainty leaves the average from then on); the band is the standard error from a bootstrap
over trajectories. The campaign has converged when, at iteration i >= 1,

* at least `finished_fraction` of the trajectories reached the end without crossing an upper threshold, and
* |P_i(t) - P_{i-1}(t)| <= z sqrt(se_i(t)^2 + se_{i-1}(t)^2) for every state and time, where se combines the
  trajectory bootstrap with the committee spread (the standard deviation of the members' own populations, when the
  iteration ran them: `population_bands`).

Otherwise it stops when the label budget or the iteration limit is spent (the report then says it did not converge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exsnn.active.config import StoppingConfig
from exsnn.active.simulate import UNCERTAIN


def classical_populations(active: np.ndarray, n_states: int, n_bootstrap: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """P (T, N) and its bootstrap standard error (T, N) from active states (T, B), -1 where not running."""
    valid = active >= 0
    onehot = (active[..., None] == np.arange(n_states)) & valid[..., None]  # (T, B, N)

    def mean(rows: np.ndarray) -> np.ndarray:
        counts = valid[:, rows].sum(axis=1)[:, None]
        return onehot[:, rows].sum(axis=1) / np.maximum(counts, 1)

    B = active.shape[1]
    rng = np.random.default_rng(seed)
    samples = np.stack([mean(rng.integers(0, B, B)) for _ in range(n_bootstrap)])
    return mean(np.arange(B)), samples.std(axis=0)


def population_bands(record: dict[str, np.ndarray], n_states: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """P (T, N), the combined standard error sqrt(bootstrap^2 + members^2) (T, N), and the committee spread alone
    (T, N; None when the members did not run alone)."""
    p, se = classical_populations(record["active"], n_states)
    members = record.get("member_populations")
    if members is None or len(members) < 2:
        return p, se, None
    spread = np.asarray(members).std(axis=0, ddof=1)[: len(p)]
    return p, np.sqrt(se**2 + spread**2), spread


@dataclass
class Decision:
    stop: str | None  # None: go on; else "converged", "label budget" or "iteration limit"
    finished_fraction: float
    population_gap: float | None  # max over states and times of |dP| - z se (<= 0: consistent)
    max_population_change: float | None
    population_band: float | None = None  # max over states and times of this iteration's combined standard error

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def finished_fraction(status: np.ndarray) -> float:
    """Fraction of trajectories (final status (B,)) that were not stopped for uncertainty."""
    return float((status != UNCERTAIN).mean())


def decide(record: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None, n_states: int, iteration: int,
           labels_spent: int, config: StoppingConfig) -> Decision:
    """Whether the campaign stops after this iteration's dynamics, and why."""
    fraction = finished_fraction(record["status"][-1])
    gap = change = None
    p, se, _ = population_bands(record, n_states)
    band = float(se.max())
    if previous is not None:
        q, se_q, _ = population_bands(previous, n_states)
        T = min(len(p), len(q))
        difference = np.abs(p[:T] - q[:T])
        change = float(difference.max())
        gap = float((difference - config.z * np.sqrt(se[:T] ** 2 + se_q[:T] ** 2)).max())
    # converged: the populations are known (narrow bands), unchanged within them, and the dynamics was trusted; bands
    # wide enough to contain any change would otherwise let a committee that is unsure everywhere "converge"
    if gap is not None and gap <= 0 and fraction >= config.finished_fraction and band <= config.max_band:
        return Decision("converged", fraction, gap, change, band)
    if labels_spent >= config.label_budget:
        return Decision("label budget", fraction, gap, change, band)
    if iteration + 1 >= config.max_iterations:
        return Decision("iteration limit", fraction, gap, change, band)
    return Decision(None, fraction, gap, change, band)
