"""Energy diagnostics per trajectory, with SHARC-like default filters, and the trajectories they exclude.

Defaults follow SHARC's diagnostics.py (Mai et al., WIREs Comput. Mol. Sci. 8, e1370 (2018)): a trajectory is
excluded when its total energy drifts more than 0.2 eV from its start, changes by more than 0.1 eV between two
consecutive records, or its potential energy jumps by more than 1.0 eV at an accepted surface hop (a hop across
such a gap means the states were mislabelled); a trajectory that the engine stopped as failed (energy drift,
electronic structure) is excluded too. Only the records up to and including the one where a trajectory ended count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exsnn.analysis.hops import FSSH_HOP, HopTable
from exsnn.analysis.records import RunRecords
from exsnn.dynamics.state import FAILED_STATUSES, RUNNING, STATUS_NAMES
from exsnn.errors import ConfigurationError
from exsnn.units import HARTREE_IN_EV


@dataclass(frozen=True)
class Thresholds:
    """Filters in eV (None: not applied)."""

    total_drift_ev: float | None = 0.2
    total_step_ev: float | None = 0.1
    hop_energy_ev: float | None = 1.0

    def __post_init__(self) -> None:
        for name in ("total_drift_ev", "total_step_ev", "hop_energy_ev"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"must be positive, got {value}", where=name)


@dataclass
class TrajectoryCheck:
    trajectory: int
    status: str
    drift_ev: float
    max_step_ev: float
    max_hop_jump_ev: float
    reasons: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {"trajectory": self.trajectory, "status": self.status, "drift_ev": clean(self.drift_ev),
                "max_step_ev": clean(self.max_step_ev), "max_hop_jump_ev": clean(self.max_hop_jump_ev),
                "excluded": self.excluded, "reasons": self.reasons}


def alive_records(status: np.ndarray) -> np.ndarray:
    """(T, B) bool: records of each trajectory up to and including the one where it stopped running."""
    alive = np.ones_like(status, dtype=bool)
    alive[1:] = status[:-1] == RUNNING
    return alive


def check_trajectories(records: RunRecords, hops: HopTable, thresholds: Thresholds = Thresholds()) -> list[TrajectoryCheck]:
    """One TrajectoryCheck per trajectory of the run."""
    alive = alive_records(records.status)
    total = np.where(alive, records.total, np.nan) * HARTREE_IN_EV
    with np.errstate(invalid="ignore"):
        drift = np.nanmax(np.abs(total - total[:1]), axis=0, initial=0.0)
        steps = np.abs(np.diff(total, axis=0))
        max_step = (
            np.nanmax(np.where(np.isfinite(steps), steps, -np.inf), axis=0, initial=0.0)
            if len(steps)
            else np.zeros(records.n_trajectories)
        )
    accepted = (~hops.frustrated) & (hops.kind == FSSH_HOP)
    checks = []
    for b in range(records.n_trajectories):
        mine = accepted & (hops.trajectory == b)
        gaps = np.abs(hops.gap_ev[mine])
        gaps = gaps[np.isfinite(gaps)]
        hop_jump = float(gaps.max()) if gaps.size else 0.0
        final = int(records.status[-1, b])
        check = TrajectoryCheck(b, STATUS_NAMES.get(final, str(final)), float(drift[b]), float(max_step[b]), hop_jump)
        if final in FAILED_STATUSES:
            check.reasons.append(f"stopped by the engine: {STATUS_NAMES.get(final, final)}")
        if thresholds.total_drift_ev is not None and drift[b] > thresholds.total_drift_ev:
            check.reasons.append(f"total-energy drift {drift[b]:.3f} eV > {thresholds.total_drift_ev:g} eV")
        if thresholds.total_step_ev is not None and max_step[b] > thresholds.total_step_ev:
            check.reasons.append(
                f"total-energy jump between records {max_step[b]:.3f} eV > {thresholds.total_step_ev:g} eV"
            )
        if thresholds.hop_energy_ev is not None and hop_jump > thresholds.hop_energy_ev:
            check.reasons.append(f"potential-energy jump at a hop {hop_jump:.3f} eV > {thresholds.hop_energy_ev:g} eV")
        checks.append(check)
    return checks
