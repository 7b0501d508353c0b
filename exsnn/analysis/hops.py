"""Hop statistics of a run: when, from and to which state, the energy gap at each hop, frustrated and forced hops,
and the geometries at hops as XYZ.

The run file records each hop with its step, its exact geometry (`/hops/positions`) and the gap E_target - E_source
there (`/hops/gap`); both are used as they are. Run files written before format_version 2 lack them: the gap is then
read from the energies of the hop's step (NaN when that step was not recorded), and the geometry at a hop is the
snapshot of the hop's step when there is one, otherwise the last snapshot before it. The XYZ comment line says
where each geometry comes from (``geometry_from`` = hop or snapshot, ``snapshot_step``, ``exact``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.analysis.records import RunRecords
from exsnn.units import BOHR_IN_ANGSTROM, HARTREE_IN_EV

FSSH_HOP, FORCED_HOP = 0, 1


@dataclass
class HopTable:
    """One row per hop event (H,): trajectory, step, time_fs, source, target, frustrated, kind (0 FSSH, 1 forced
    to S0), gap_ev = E_target - E_source at the hop (NaN: an older run file that did not record the hop's step),
    positions (H, n, 3) Bohr, the geometry of the hop (NaN: an older run file without /hops/positions)."""

    trajectory: np.ndarray
    step: np.ndarray
    time_fs: np.ndarray
    source: np.ndarray
    target: np.ndarray
    frustrated: np.ndarray
    kind: np.ndarray
    gap_ev: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.trajectory)

    def subset(self, mask: np.ndarray) -> HopTable:
        return HopTable(*(getattr(self, name)[mask] for name in self.__dataclass_fields__))

    def summary(self, n_states: int) -> dict[str, Any]:
        """Counts of accepted (FSSH), frustrated and forced hops, and accepted hops per state pair "S2->S1"."""
        accepted = (~self.frustrated) & (self.kind == FSSH_HOP)
        pairs: dict[str, int] = {}
        for i in range(n_states):
            for j in range(n_states):
                count = int(np.sum(accepted & (self.source == i) & (self.target == j)))
                if count:
                    pairs[f"S{i}->S{j}"] = count
        gaps = self.gap_ev[accepted & np.isfinite(self.gap_ev)]
        return {
            "accepted": int(accepted.sum()),
            "frustrated": int(self.frustrated.sum()),
            "forced": int(np.sum(self.kind == FORCED_HOP)),
            "per_pair": pairs,
            "mean_abs_gap_ev": float(np.abs(gaps).mean()) if gaps.size else None,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"trajectory": int(self.trajectory[h]), "step": int(self.step[h]), "time_fs": float(self.time_fs[h]),
             "source": int(self.source[h]), "target": int(self.target[h]), "frustrated": bool(self.frustrated[h]),
             "kind": "forced" if self.kind[h] == FORCED_HOP else "fssh",
             "gap_ev": None if not np.isfinite(self.gap_ev[h]) else float(self.gap_ev[h])}
            for h in range(len(self))
        ]

    def write_table(self, path: str | Path) -> Path:
        path = Path(path)
        lines = ["# trajectory step time_fs source target frustrated kind gap_eV"]
        for row in self.rows():
            gap = "nan" if row["gap_ev"] is None else f"{row['gap_ev']:.6f}"
            lines.append(f"{row['trajectory']} {row['step']} {row['time_fs']:.4f} {row['source']} {row['target']} "
                         f"{int(row['frustrated'])} {row['kind']} {gap}")
        path.write_text("\n".join(lines) + "\n")
        return path


def hop_table(records: RunRecords) -> HopTable:
    hops = records.hops
    steps = np.asarray(hops["step"], dtype=np.int64)
    if records.hop_geometries:
        gap = np.asarray(hops["gap"], dtype=np.float64) * HARTREE_IN_EV
        positions = np.asarray(hops["positions"], dtype=np.float64)
    else:  # format_version 1: the energies of the hop's step, when it was recorded; no geometries
        record_of_step = {int(s): t for t, s in enumerate(records.step)}
        gap = np.full(len(steps), np.nan)
        for h, step in enumerate(steps):
            t = record_of_step.get(int(step))
            if t is not None:
                energies = records.energies[t, int(hops["trajectory"][h])]
                gap[h] = (energies[int(hops["target"][h])] - energies[int(hops["source"][h])]) * HARTREE_IN_EV
        positions = np.full((len(steps), len(records.numbers), 3), np.nan)
    dt_fs = records.time_fs[1] / records.step[1] if len(records.step) > 1 and records.step[1] > 0 else np.nan
    return HopTable(np.asarray(hops["trajectory"], dtype=np.int64), steps, steps * dt_fs,
                    np.asarray(hops["source"], dtype=np.int64), np.asarray(hops["target"], dtype=np.int64),
                    np.asarray(hops["frustrated"], dtype=bool), np.asarray(hops["kind"], dtype=np.int64), gap, positions)


def write_hop_geometries(records: RunRecords, table: HopTable, path: str | Path, accepted_only: bool = True) -> tuple[Path, int, int]:
    """Extended XYZ (Angstrom) of the geometry at each hop (accepted ones unless accepted_only is False); returns
    the path, how many frames are exact (the recorded hop geometry, or a snapshot at the hop's step) and how many are
    the last snapshot before the hop (older run files only)."""
    import ase
    import ase.io

    path = Path(path)
    images = []
    exact = approximate = 0
    snapshot_steps = np.asarray(records.geometry_step)
    for h, row in enumerate(table.rows()):
        if accepted_only and (row["frustrated"] or row["kind"] != "fssh"):
            continue
        if np.all(np.isfinite(table.positions[h])):
            positions, snapshot_step, source = table.positions[h], row["step"], "hop"
        else:
            before = np.flatnonzero(snapshot_steps <= row["step"])
            if before.size == 0:
                continue
            g = before[-1]
            positions, snapshot_step, source = records.positions[g, row["trajectory"]], int(snapshot_steps[g]), "snapshot"
        is_exact = bool(snapshot_step == row["step"])
        exact += is_exact
        approximate += not is_exact
        atoms = ase.Atoms(numbers=records.numbers, positions=positions * BOHR_IN_ANGSTROM)
        atoms.info.update({"trajectory": row["trajectory"], "hop_step": row["step"], "time_fs": row["time_fs"],
                           "source": row["source"], "target": row["target"], "geometry_from": source,
                           "snapshot_step": snapshot_step, "exact": is_exact,
                           "gap_eV": float("nan") if row["gap_ev"] is None else row["gap_ev"]})
        images.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    if images:
        ase.io.write(str(path), images, format="extxyz")
    else:
        path.write_text("")
    return path, exact, approximate
