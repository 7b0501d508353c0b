"""The HDF5 file of one surface-hopping ensemble: records, hops, settings and the checkpoint to resume from.

Layout (T recorded steps, B trajectories, N states, n atoms, G geometry snapshots)::

    /                       attrs: format, format_version, settings (JSON), potential, n_trajectories, n_states,
                                   n_atoms, record_every, geometry_every, checkpoint_every, config (TOML text)
    /system/numbers (n,), /system/masses (n,) electron masses
    /steps/step (T,)        /steps/time (T,) atomic time units
    /steps/active (T, B) int8           /steps/status (T, B) int8 (0 running, 1 finished, 2 left box, 3 failed)
    /steps/populations (T, B, N) float32  quantum populations |c|^2
    /steps/energies (T, B, N)  /steps/kinetic (T, B)  /steps/total (T, B)   Hartree
    /geometries/step (G,)   /geometries/positions (G, B, n, 3) Bohr   /geometries/velocities (G, B, n, 3)
    /hops/{trajectory, step, source, target, frustrated, kind} (H,)   kind 0 = FSSH, 1 = forced to S0
    /hops/positions (H, n, 3) Bohr      the exact geometry of each hop: the trajectory's positions at the hop's step
    /hops/gap (H,) Hartree              E_target - E_source at that geometry (frustrated hops too)
    /checkpoint/<tensor> and attrs step: the ensemble state after the last committed step

`/hops/positions` and `/hops/gap` carry their unit as the attribute `unit`. A hop of step t happens at the positions
that step t reaches (the engine reports a step's hops with the state after it), so `/hops/positions` holds the
geometry of the hop whatever `geometry_every` is. Run files of format_version 1 (older exsnn) have no `/hops/positions` and `/hops/gap`;
`exsnn.analysis` then falls back to the geometry snapshots, and a resumed version-1 run keeps that layout.

Records are buffered in memory and committed together with the checkpoint in one atomic update
(`exsnn.data.atomic`), so the records and the checkpoint always agree: a run killed at any instant resumes from
its last checkpoint and reproduces the uninterrupted run bit for bit. A new run file is written whole (metadata,
the records of step 0 and the first checkpoint) beside its destination and renamed over it, so an old run file is
replaced only by a complete new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from exsnn.data.atomic import atomic_h5_update, exclusive_lock, fsync_path, open_readonly, remove_stale_temporaries
from exsnn.dynamics.settings import OutputSettings
from exsnn.dynamics.state import EnsembleState, HopEvents, populations
from exsnn.errors import DataError

FORMAT_NAME = "exsnn-fssh-run"
FORMAT_VERSION = 2  # 2: /hops/positions and /hops/gap
_COMPLEX = ("coefficients",)
_HOP_GEOMETRY = ("positions", "gap")  # the /hops datasets that format_version 1 lacks
_UNITS = {"hops/positions": "Bohr", "hops/gap": "Hartree"}


@dataclass
class RunMetadata:
    settings: dict[str, Any]
    potential: str
    numbers: np.ndarray
    masses: np.ndarray
    n_states: int
    n_trajectories: int
    output: OutputSettings = field(default_factory=OutputSettings)
    config: str = ""


@dataclass
class _Buffer:
    steps: list[dict[str, np.ndarray]] = field(default_factory=list)
    geometries: list[dict[str, np.ndarray]] = field(default_factory=list)
    hops: list[dict[str, np.ndarray]] = field(default_factory=list)


def _extend(h5: h5py.File, name: str, values: np.ndarray) -> None:
    if name not in h5:
        h5.create_dataset(name, data=values, maxshape=(None, *values.shape[1:]), chunks=True)
        if name in _UNITS:
            h5[name].attrs["unit"] = _UNITS[name]
        return
    ds = h5[name]
    start = ds.shape[0]
    ds.resize(start + len(values), axis=0)
    ds[start:] = values


def _rows_of(state: EnsembleState, trajectories: torch.Tensor) -> torch.Tensor:
    """The rows of `state` that hold the trajectories with ids `trajectories` (K,), in their order."""
    if state.trajectory_ids is None:
        return trajectories
    return torch.nonzero(trajectories[:, None] == state.trajectory_ids[None, :])[:, 1]


#: EnsembleState -> (B,) total energies, Hartree (the engine's `total_energy`)
TotalEnergy = Callable[[EnsembleState], torch.Tensor]


class RunWriter:
    """Buffers per-step records and commits them with a checkpoint every `checkpoint_every` steps."""

    def __init__(self, path: str | Path, metadata: RunMetadata, total_energy: TotalEnergy) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.total_energy = total_energy
        self.buffer = _Buffer()

    @classmethod
    def create(cls, path: str | Path, metadata: RunMetadata, total_energy: TotalEnergy, initial: EnsembleState,
               overwrite: bool = False) -> RunWriter:
        """Write a new run file holding the metadata, the records of `initial` and its checkpoint. The file is
        written beside `path` and renamed over it when complete (an existing run is replaced only with
        `overwrite`, and only by a complete file)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise DataError(path, "file", "already exists (use --resume to continue it, or --overwrite)")
        writer = cls(path, metadata, total_energy)
        writer._buffer_records(initial, HopEvents.empty(initial.step, initial.positions.device))
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path):
            remove_stale_temporaries(path)
            temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            try:
                with h5py.File(temporary, "w") as h5:
                    writer._write_metadata(h5)
                    writer._write_buffer(h5, initial)
                fsync_path(temporary)
                os.replace(temporary, path)
                fsync_path(path.parent)
            finally:
                temporary.unlink(missing_ok=True)
        return writer

    def _write_metadata(self, h5: h5py.File) -> None:
        metadata = self.metadata
        h5.attrs.update(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "settings": json.dumps(metadata.settings, sort_keys=True),
                "potential": metadata.potential,
                "n_trajectories": metadata.n_trajectories,
                "n_states": metadata.n_states,
                "n_atoms": len(metadata.numbers),
                "record_every": metadata.output.record_every,
                "geometry_every": metadata.output.geometry_every,
                "checkpoint_every": metadata.output.checkpoint_every,
                "config": metadata.config,
            }
        )
        h5["system/numbers"] = metadata.numbers
        h5["system/masses"] = metadata.masses
        h5["system/masses"].attrs["unit"] = "electron mass"

    def record(self, state: EnsembleState, hops: HopEvents) -> None:
        """Buffer what this step should store; commit with a checkpoint when one is due."""
        self._buffer_records(state, hops)
        if state.step % self.metadata.output.checkpoint_every == 0:
            self.commit(state)

    def _buffer_records(self, state: EnsembleState, hops: HopEvents) -> None:
        m = self.metadata
        if state.step % m.output.record_every == 0:
            energies = state.energies
            total = self.total_energy(state)
            self.buffer.steps.append(
                {
                    "step": np.array([state.step]),
                    "time": np.array([state.step * m.settings["dt"]]),
                    "active": state.active.cpu().numpy().astype(np.int8)[None],
                    "status": state.status.cpu().numpy().astype(np.int8)[None],
                    "populations": populations(state.coefficients).cpu().numpy().astype(np.float32)[None],
                    "energies": energies.cpu().numpy()[None],
                    "kinetic": (total - energies.gather(1, state.active[:, None])[:, 0]).cpu().numpy()[None],
                    "total": total.cpu().numpy()[None],
                }
            )
        if state.step % m.output.geometry_every == 0:
            self.buffer.geometries.append(
                {
                    "step": np.array([state.step]),
                    "positions": state.positions.cpu().numpy()[None],
                    "velocities": state.velocities.cpu().numpy()[None],
                }
            )
        if len(hops.trajectory):
            rows = _rows_of(state, hops.trajectory)
            energies = state.energies[rows]
            self.buffer.hops.append(
                {
                    "trajectory": hops.trajectory.cpu().numpy(),
                    "step": np.full(len(hops.trajectory), hops.step),
                    "source": hops.source.cpu().numpy().astype(np.int8),
                    "target": hops.target.cpu().numpy().astype(np.int8),
                    "frustrated": hops.frustrated.cpu().numpy(),
                    "kind": hops.kind.cpu().numpy().astype(np.int8),
                    "positions": state.positions[rows].cpu().numpy(),
                    "gap": (energies.gather(1, hops.target[:, None]) - energies.gather(1, hops.source[:, None]))[:, 0].cpu().numpy(),
                }
            )

    def commit(self, state: EnsembleState) -> None:
        """Write buffered records and the checkpoint of `state` in one atomic update."""
        with atomic_h5_update(self.path) as h5:
            self._write_buffer(h5, state)

    def _write_buffer(self, h5: h5py.File, state: EnsembleState) -> None:
        """Append the buffered records to `h5` and replace its checkpoint by `state`'s; empty the buffer."""
        legacy = "hops/trajectory" in h5 and "hops/positions" not in h5  # a run started by format_version 1
        for group, rows in (
            ("steps", self.buffer.steps),
            ("geometries", self.buffer.geometries),
            ("hops", self.buffer.hops),
        ):
            if rows:
                for key in rows[0]:
                    if legacy and group == "hops" and key in _HOP_GEOMETRY:
                        continue  # a run started by an older exsnn keeps its layout
                    _extend(h5, f"{group}/{key}", np.concatenate([r[key] for r in rows]))
        if "checkpoint" in h5:
            del h5["checkpoint"]
        checkpoint = h5.create_group("checkpoint")
        checkpoint.attrs["step"] = state.step
        for name, tensor in state.tensors().items():
            checkpoint[name] = tensor.cpu().numpy()
        self.buffer = _Buffer()


def open_run(path: str | Path) -> h5py.File:
    """Open a run file read-only (DataError naming the file if it is missing or not a run file)."""
    return open_readonly(path, FORMAT_NAME, "an exsnn surface-hopping run")


def load_checkpoint(path: str | Path, device: torch.device) -> EnsembleState | None:
    """The ensemble state saved with the last commit, or None if the run has not committed one."""
    with open_run(path) as h5:
        if "checkpoint" not in h5:
            return None
        group = h5["checkpoint"]
        tensors = {name: torch.as_tensor(group[name][()], device=device) for name in group}
        return EnsembleState(step=int(group.attrs["step"]), **tensors)


def read_config_text(path: str | Path) -> str:
    with open_run(path) as h5:
        return str(h5.attrs.get("config", ""))
