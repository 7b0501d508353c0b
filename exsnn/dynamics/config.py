"""`exsnn dynamics` input files (TOML): what to simulate, from where, for how long, and where to write it.

```toml
[potential]
spec = "lvc:../shared/data/schnarc/lvc_so2_3s/LVC.template"  # relative paths: from this file's folder
device = "cpu"

[initial_conditions]
sampling = "wigner"        # "wigner" (harmonic modes of the potential), "file", or "scattering" (1-D models)
# file = "geometries.xyz"  # for sampling = "file": XYZ/extxyz (Angstrom) or exsnn HDF5 (Bohr)
# momentum = 20.0          # for sampling = "scattering": mean momentum (a.u.)
n_trajectories = 100
initial_state = 2          # 0 = S0
seed = 7

[integrator]
dt_fs = 0.5
duration_fs = 50.0
decoherence = "edc"        # or "none"
edc_c = 0.1                # Hartree
rescale = "nac"            # or "velocity"
frustrated = "keep"        # "keep", "reflect", "reflect_gradv"
# forced_hop_gap_ev = 0.1  # hop to S0 when the active state is closer than this to S0
# box_bohr = 50.0          # end trajectories that leave the box
max_energy_drift_ev = 0.2  # stop and mark failed beyond this total-energy change
# substeps = 20            # electronic substeps (default: chosen automatically)

[output]
file = "run.h5"            # relative to this file's folder
record_every = 1           # steps between records of states, populations and energies
geometry_every = 10        # steps between stored positions and velocities
checkpoint_every = 100     # steps between checkpoints (atomic commits of records + ensemble state)
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exsnn.errors import DataError
from exsnn.dynamics.settings import FSSHSettings
from exsnn.units import EV_IN_HARTREE, FS_IN_AU_TIME

_SECTIONS = {
    "potential": {"spec", "device"},
    "initial_conditions": {"sampling", "file", "momentum", "n_trajectories", "initial_state", "seed"},
    "integrator": {"dt_fs", "duration_fs", "decoherence", "edc_c", "rescale", "frustrated", "forced_hop_gap_ev",
                   "box_bohr", "max_energy_drift_ev", "substeps"},
    "output": {"file", "record_every", "geometry_every", "checkpoint_every"},
}


@dataclass
class DynamicsConfig:
    path: Path
    text: str
    potential_spec: str
    device: str
    sampling: str
    geometry_file: Path | None
    momentum: float | None
    n_trajectories: int
    initial_state: int
    seed: int
    settings: FSSHSettings
    output: Path
    record_every: int
    geometry_every: int
    checkpoint_every: int


def _get(table: dict[str, Any], key: str, path: Path, section: str, kind: type, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise DataError(path, f"[{section}] {key}", "missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(path, f"[{section}] {key}", f"expected {kind.__name__}, got {value!r}")
    return value


def parse_state(value: Any, path: Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.upper().startswith("S") and value[1:].isdigit():
        return int(value[1:])
    raise DataError(path, "[initial_conditions] initial_state", f"expected a state index (0 = S0) or 'S1', 'S2', ...; got {value!r}")


def load_config(path: str | Path) -> DynamicsConfig:
    """Read and check a dynamics TOML file; every problem names the file and the key."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(path, "file", f"invalid TOML ({exc})") from None
    for section, table in data.items():
        if section not in _SECTIONS:
            raise DataError(path, f"[{section}]", f"unknown section; expected {sorted(_SECTIONS)}")
        unknown = set(table) - _SECTIONS[section]
        if unknown:
            raise DataError(path, f"[{section}] {sorted(unknown)[0]}", f"unknown key; expected one of {sorted(_SECTIONS[section])}")
    base = path.parent
    pot, ic, integ, out = (data.get(s, {}) for s in ("potential", "initial_conditions", "integrator", "output"))
    sampling = _get(ic, "sampling", path, "initial_conditions", str, "wigner")
    if sampling not in ("wigner", "file", "scattering"):
        raise DataError(path, "[initial_conditions] sampling", f"expected 'wigner', 'file' or 'scattering', got {sampling!r}")
    geometry_file = _get(ic, "file", path, "initial_conditions", str, None)
    if sampling == "file" and geometry_file is None:
        raise DataError(path, "[initial_conditions] file", "missing (needed for sampling = 'file')")
    momentum = _get(ic, "momentum", path, "initial_conditions", float, None)
    if sampling == "scattering" and momentum is None:
        raise DataError(path, "[initial_conditions] momentum", "missing (needed for sampling = 'scattering')")
    dt_fs = _get(integ, "dt_fs", path, "integrator", float)
    duration_fs = _get(integ, "duration_fs", path, "integrator", float)
    if dt_fs <= 0 or duration_fs <= 0:
        raise DataError(path, "[integrator] dt_fs/duration_fs", "must be positive")
    gap = _get(integ, "forced_hop_gap_ev", path, "integrator", float, None)
    try:
        settings = FSSHSettings(
            dt=dt_fs * FS_IN_AU_TIME,
            n_steps=int(round(duration_fs / dt_fs)),
            substeps=_get(integ, "substeps", path, "integrator", int, None),
            rescale=_get(integ, "rescale", path, "integrator", str, "nac"),
            frustrated=_get(integ, "frustrated", path, "integrator", str, "keep"),
            decoherence=_get(integ, "decoherence", path, "integrator", str, "edc"),
            edc_c=_get(integ, "edc_c", path, "integrator", float, 0.1),
            forced_hop_gap=None if gap is None else gap * EV_IN_HARTREE,
            box=_get(integ, "box_bohr", path, "integrator", float, None),
            max_energy_drift=_get(integ, "max_energy_drift_ev", path, "integrator", float, 0.2) * EV_IN_HARTREE,
            seed=_get(ic, "seed", path, "initial_conditions", int, 0),
        )
    except ValueError as exc:
        raise DataError(path, "[integrator]", str(exc)) from None
    n_traj = _get(ic, "n_trajectories", path, "initial_conditions", int)
    if n_traj < 1:
        raise DataError(path, "[initial_conditions] n_trajectories", "must be at least 1")
    return DynamicsConfig(
        path=path,
        text=text,
        potential_spec=_get(pot, "spec", path, "potential", str),
        device=_get(pot, "device", path, "potential", str, "cpu"),
        sampling=sampling,
        geometry_file=None if geometry_file is None else base / geometry_file,
        momentum=momentum,
        n_trajectories=n_traj,
        initial_state=parse_state(ic.get("initial_state", 0), path),
        seed=settings.seed,
        settings=settings,
        output=base / _get(out, "file", path, "output", str, path.with_suffix(".h5").name),
        record_every=_get(out, "record_every", path, "output", int, 1),
        geometry_every=_get(out, "geometry_every", path, "output", int, 10),
        checkpoint_every=_get(out, "checkpoint_every", path, "output", int, 100),
    )
