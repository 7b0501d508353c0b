"""Exports of run files to the tools people already use: shnitsel-tools (NetCDF) and ASE trajectories.

shnitsel-tools layout (its "Trajectory" datasets, format v1.3, as `shnitsel.io.write_shnitsel_file` writes them):
one NetCDF-4 file per trajectory, ``traj_00000.nc``, ..., in a folder that ``shnitsel.read(folder, kind="shnitsel")``
reads. Each holds the dimensions time (the recorded steps, fs), state (1..N), atom, direction (x, y, z) and

    energy (time, state) Hartree     e_kin (time) Hartree       astate (time) active state, 1-based (S0 = 1)
    atXYZ, velocities (time, atom, direction) Bohr, Bohr/atomic time unit (NaN where no snapshot was stored)
    atNums, atNames (atom); trajid, delta_t (fs), max_ts, t_max (fs) scalars; populations (time, state) |c|^2

with every attribute JSON-encoded as shnitsel-tools expects. Writing needs xarray and h5netcdf (the `export`
extra), not shnitsel-tools itself.

ASE: one ``traj_00000.traj`` per trajectory, a frame per stored geometry snapshot (Angstrom, ASE velocities), the
active state's energy (eV) as the frame's energy, and time_fs, step, active_state and the energies of all states (eV)
in ``atoms.info``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.analysis.records import RunRecords
from exsnn.errors import ConfigurationError
from exsnn.units import ANGSTROM_IN_BOHR, AU_TIME_IN_FS, BOHR_IN_ANGSTROM, HARTREE_IN_EV

SHNITSEL_FORMAT_VERSION = "v1.3"


def _json_attrs(attrs: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in attrs.items()}


def _snapshot_arrays(records: RunRecords, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (T, n, 3) of trajectory b on the record times (NaN where no snapshot)."""
    T, n = len(records.step), len(records.numbers)
    positions = np.full((T, n, 3), np.nan)
    velocities = np.full((T, n, 3), np.nan)
    index = {int(s): t for t, s in enumerate(records.step)}
    for g, step in enumerate(records.geometry_step):
        t = index.get(int(step))
        if t is not None:
            positions[t] = records.positions[g, b]
            velocities[t] = records.velocities[g, b]
    return positions, velocities


def export_shnitsel(records: RunRecords, folder: str | Path, trajectories: np.ndarray | None = None) -> list[Path]:
    """Write one shnitsel-tools NetCDF file per trajectory (all, or those in the (B,) bool mask) into `folder`."""
    try:
        import xarray as xr
    except ImportError:
        raise ConfigurationError("exporting to shnitsel-tools needs xarray and h5netcdf: pip install 'exsnn[export]'") from None
    from ase.data import chemical_symbols

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    T, B = records.active.shape
    N, n = records.n_states, len(records.numbers)
    dt_fs = float(records.dt * AU_TIME_IN_FS)
    mask = np.ones(B, dtype=bool) if trajectories is None else np.asarray(trajectories, dtype=bool)
    written = []
    fs = {"units": "fs", "unitdim": "time"}
    hartree = {"units": "Hartree", "unitdim": "energy"}
    for b in np.flatnonzero(mask):
        positions, velocities = _snapshot_arrays(records, int(b))
        data = {
            "energy": (("time", "state"), records.energies[:, b], {**hartree, "long_name": "Absolute energy"}),
            "e_kin": (("time",), records.kinetic[:, b], {**hartree, "long_name": "Kinetic_energy"}),
            "astate": (("time",), (records.active[:, b] + 1).astype(np.int16),
                       {"long_name": "Active state in dynamic trajectories (MCH)", "fill_value": -1}),
            "atXYZ": (("time", "atom", "direction"), positions, {"units": "Bohr", "unitdim": "length", "long_name": "Positions"}),
            "velocities": (("time", "atom", "direction"), velocities, {"units": "au", "unitdim": "velocity", "long_name": "Velocities"}),
            "populations": (("time", "state"), records.quantum[:, b], {"long_name": "Quantum populations |c|^2 (exsnn)"}),
        }
        coords = {
            "time": ("time", records.time_fs, fs),
            "state": ("state", np.arange(1, N + 1)),
            "atom": ("atom", np.arange(n)),
            "direction": ("direction", np.array(["x", "y", "z"])),
            "atNums": ("atom", records.numbers.astype(np.int8)),
            "atNames": ("atom", np.array([chemical_symbols[int(z)] for z in records.numbers])),
            "state_names": ("state", np.array([f"S{s}" for s in range(N)])),
            "state_types": ("state", np.ones(N, dtype=np.int8)),
            "trajid": ((), int(b)),
            "delta_t": ((), dt_fs, fs),
            "max_ts": ((), int(records.step[-1])),
            "t_max": ((), float(records.time_fs[-1]), fs),
        }
        attrs = {"input_format": "exsnn", "input_type": "dynamic", "input_format_version": "1",
                 "completed": bool(records.status[-1, b] != 0), "num_singlets": N, "num_doublets": 0, "num_triplets": 0,
                 "est_level": records.potential, "has_forces": False, "trajectory_id": int(b),
                 "_MultiIndex_levels_from_attrs": 1}
        dataset = xr.Dataset(data, coords=coords, attrs=_json_attrs(attrs))
        for name in dataset.variables:
            dataset[name].attrs = _json_attrs(dict(dataset[name].attrs))
        dataset.attrs["__attrs_json_encoded"] = 1
        dataset.attrs["__shnitsel_format_version"] = SHNITSEL_FORMAT_VERSION
        path = folder / f"traj_{int(b):05d}.nc"
        dataset.to_netcdf(path, engine="h5netcdf")
        written.append(path)
    return written


def export_ase(records: RunRecords, folder: str | Path, trajectories: np.ndarray | None = None) -> list[Path]:
    """Write one ASE .traj file per trajectory (all, or those in the (B,) bool mask): a frame per stored geometry."""
    import ase
    from ase import units as ase_units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io.trajectory import Trajectory

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    B = records.n_trajectories
    mask = np.ones(B, dtype=bool) if trajectories is None else np.asarray(trajectories, dtype=bool)
    index = {int(s): t for t, s in enumerate(records.step)}
    to_ase_velocity = 1.0 / (ANGSTROM_IN_BOHR * AU_TIME_IN_FS * ase_units.fs)
    written = []
    for b in np.flatnonzero(mask):
        path = folder / f"traj_{int(b):05d}.traj"
        with Trajectory(str(path), "w") as out:
            for g, step in enumerate(records.geometry_step):
                atoms = ase.Atoms(numbers=records.numbers, positions=records.positions[g, b] * BOHR_IN_ANGSTROM)
                atoms.set_velocities(records.velocities[g, b] * to_ase_velocity)
                t = index.get(int(step))
                info: dict[str, Any] = {"step": int(step), "time_fs": float(step * records.dt * AU_TIME_IN_FS)}
                if t is not None:
                    energies = records.energies[t, b] * HARTREE_IN_EV
                    info.update(active_state=int(records.active[t, b]), energies_ev=[float(e) for e in energies])
                    atoms.calc = SinglePointCalculator(atoms, energy=float(energies[records.active[t, b]]))
                atoms.info.update(info)
                out.write(atoms)
        written.append(path)
    return written
