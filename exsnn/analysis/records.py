"""A run file's records as numpy arrays, read once (layout: `exsnn.dynamics.runfile`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.dynamics.runfile import open_run
from exsnn.dynamics.state import FAILED_STATUSES, STATUS_NAMES
from exsnn.errors import ConfigurationError
from exsnn.units import AU_TIME_IN_FS

HOP_KEYS = ("trajectory", "step", "source", "target", "frustrated", "kind")


@dataclass
class RunRecords:
    """Everything recorded in a run (T records, B trajectories, N states, n atoms, G geometry snapshots, H hops),
    atomic units but for `time_fs`.

    step (T,), time_fs (T,), active (T, B), status (T, B), quantum (T, B, N) |c|^2, energies (T, B, N) Hartree,
    kinetic and total (T, B) Hartree; geometry_step (G,), positions and velocities (G, B, n, 3); hops: dict of (H,)
    arrays trajectory, step, source, target, frustrated, kind (0 FSSH, 1 forced to S0), and the exact geometry
    positions (H, n, 3) Bohr and gap (H,) E_target - E_source Hartree of each hop, which run files written before
    format_version 2 lack (`hop_geometries` is False for them)."""

    path: Path
    n_states: int
    numbers: np.ndarray
    masses: np.ndarray
    dt: float
    step: np.ndarray
    time_fs: np.ndarray
    active: np.ndarray
    status: np.ndarray
    quantum: np.ndarray
    energies: np.ndarray
    kinetic: np.ndarray
    total: np.ndarray
    geometry_step: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    hops: dict[str, np.ndarray]
    settings: dict[str, Any]
    potential: str

    @property
    def hop_geometries(self) -> bool:
        """Whether the run file records the exact geometry and gap of each hop (/hops/positions, /hops/gap)."""
        return "positions" in self.hops and "gap" in self.hops

    @property
    def n_trajectories(self) -> int:
        return int(self.active.shape[1])

    def failed(self) -> np.ndarray:
        """(B,) bool: trajectories that the engine stopped as failed (energy drift, electronic structure)."""
        return np.isin(self.status[-1], FAILED_STATUSES)

    def final_status_names(self) -> list[str]:
        return [STATUS_NAMES.get(int(s), str(int(s))) for s in self.status[-1]]


def read_run(path: str | Path) -> RunRecords:
    """Read a run file (DataError naming the file when it is not one)."""
    path = Path(path)
    with open_run(path) as h5:
        settings = json.loads(h5.attrs.get("settings", "{}"))
        n_states = int(h5.attrs["n_states"])
        n_atoms = len(h5["system/numbers"])
        if "hops" in h5:
            hops = {key: h5[f"hops/{key}"][()] for key in (*HOP_KEYS, "positions", "gap") if f"hops/{key}" in h5}
        else:  # no hop yet: nothing is missing
            hops = {key: np.zeros(0, dtype=np.int64) for key in HOP_KEYS}
            hops.update(positions=np.zeros((0, n_atoms, 3)), gap=np.zeros(0))
        has_geometries = "geometries" in h5
        records = RunRecords(
            path=path,
            n_states=n_states,
            numbers=h5["system/numbers"][()],
            masses=h5["system/masses"][()],
            dt=float(settings.get("dt", np.nan)),
            step=h5["steps/step"][()],
            time_fs=h5["steps/time"][()] * AU_TIME_IN_FS,
            active=h5["steps/active"][()].astype(np.int64),
            status=h5["steps/status"][()].astype(np.int64),
            quantum=h5["steps/populations"][()].astype(np.float64),
            energies=h5["steps/energies"][()],
            kinetic=h5["steps/kinetic"][()],
            total=h5["steps/total"][()],
            geometry_step=h5["geometries/step"][()] if has_geometries else np.zeros(0, dtype=np.int64),
            positions=h5["geometries/positions"][()] if has_geometries else np.zeros((0, 0, 0, 3)),
            velocities=h5["geometries/velocities"][()] if has_geometries else np.zeros((0, 0, 0, 3)),
            hops={key: np.asarray(value) for key, value in hops.items()},
            settings=settings,
            potential=str(h5.attrs.get("potential", "")),
        )
    records.hops["frustrated"] = records.hops["frustrated"].astype(bool)
    return records


def trajectory_selection(records: RunRecords, trajectories: list[int] | np.ndarray | None) -> np.ndarray:
    """(B,) bool mask of the trajectories asked for (None: all); ConfigurationError for ids outside the run."""
    B = records.n_trajectories
    if trajectories is None:
        return np.ones(B, dtype=bool)
    ids = np.asarray(list(trajectories), dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= B)]
    if bad.size:
        raise ConfigurationError(
            f"trajectories {bad.tolist()} do not exist (the run has 0 to {B - 1})", where="trajectories"
        )
    mask = np.zeros(B, dtype=bool)
    mask[ids] = True
    return mask
