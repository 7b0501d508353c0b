"""`exsnn dynamics` input files (TOML): what to simulate, from where, for how long, and where to write it.

```toml
[potential]
spec = "lvc:../shared/data/schnarc/lvc_so2_3s/LVC.template"  # relative paths: from this file's folder
device = "cpu"

[initial_conditions]
sampling = "wigner"        # "wigner" (harmonic modes of the potential), "file", or "scattering" (1-D models)
# file = "geometries.xyz"  # for sampling = "file": XYZ/extxyz (Angstrom) or exsnn HDF5 (Bohr)
# momentum = 20.0          # for sampling = "scattering": mean momentum (a.u., positive)
n_trajectories = 100
initial_state = 2          # 0 = S0 (or "S2"); "file": each frame's own `initial_state` key (sampling = "file")
seed = 7                   # non-negative

[integrator]
dt_fs = 0.5
duration_fs = 50.0
decoherence = "edc"        # a scheme of exsnn.dynamics.decoherence: "edc" or "none"
edc_c = 0.1                # Hartree
rescale = "nac"            # or "velocity"
# couplings = "nac"        # or "curvature": time-derivative couplings from the energy gaps (rescale = "velocity")
frustrated = "keep"        # "keep", "reflect", "reflect_gradv"
# forced_hop_gap_ev = 0.1  # hop to S0 when the active state is closer than this to S0
# box_bohr = 50.0          # end trajectories that leave the box
# ground_state_end_fs = 10.0  # end a trajectory after this long in S0 (SHARC's killafter); it stays in S0
max_energy_drift_ev = 0.2  # stop and mark failed beyond this total-energy change
# substeps = 20            # electronic substeps (default: chosen automatically per trajectory)
# compile = true           # fuse the integrator's arithmetic with torch.compile (for GPUs)
# sign_bisections = 4      # halvings of a step to follow state signs by NACs where they turn fast (0: none)

[output]
file = "run.h5"            # relative to this file's folder
record_every = 1           # steps between records of states, populations and energies
geometry_every = 10        # steps between stored positions and velocities
checkpoint_every = 100     # steps between checkpoints (atomic commits of records + ensemble state)
```

With `initial_state = "file"` every trajectory starts in the state its frame names: an extended-XYZ comment-line key
`initial_state=K` (or `initial_state=SK`) on every frame used, as in the `initial_conditions.xyz` that `exsnn excite`
writes for all the states it selected. A frame without the key, or with a state the potential does not have, is a
DataError naming the file and the frame; exsnn HDF5 datasets carry no such key. A state given as a number starts
every trajectory in it, whatever keys the frames carry (a warning says so when they name other states).

Every key but `[potential] spec`, `dt_fs`, `duration_fs` and `n_trajectories` is optional; a key left out takes
the default of `exsnn.dynamics.settings.FSSHSettings` or `OutputSettings` (the one place defaults are written; the
values above are examples). Every problem is reported as a DataError naming the file and the key, before any work.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exsnn.dynamics.settings import FSSHSettings, OutputSettings
from exsnn.errors import ConfigurationError, DataError
from exsnn.units import EV_IN_HARTREE, FS_IN_AU_TIME

_SECTIONS = {
    "potential": {"spec", "device"},
    "initial_conditions": {"sampling", "file", "momentum", "n_trajectories", "initial_state", "seed"},
    "integrator": {"dt_fs", "duration_fs", "decoherence", "edc_c", "rescale", "couplings", "frustrated", "forced_hop_gap_ev",
                   "box_bohr", "max_energy_drift_ev", "substeps", "compile", "sign_bisections", "sign_min_cosine",
                   "ground_state_end_fs"},
    "output": {"file", "record_every", "geometry_every", "checkpoint_every"},
}
SAMPLINGS = ("wigner", "file", "scattering")
# optional [integrator] keys: TOML key -> (FSSHSettings field, type, factor to atomic units or None)
_INTEGRATOR_KEYS: dict[str, tuple[str, type, float | None]] = {
    "decoherence": ("decoherence", str, None),
    "edc_c": ("edc_c", float, 1.0),
    "rescale": ("rescale", str, None),
    "couplings": ("couplings", str, None),
    "frustrated": ("frustrated", str, None),
    "forced_hop_gap_ev": ("forced_hop_gap", float, EV_IN_HARTREE),
    "box_bohr": ("box", float, 1.0),
    "ground_state_end_fs": ("ground_state_end", float, FS_IN_AU_TIME),
    "max_energy_drift_ev": ("max_energy_drift", float, EV_IN_HARTREE),
    "substeps": ("substeps", int, None),
    "compile": ("compile", bool, None),
    "sign_bisections": ("sign_bisections", int, None),
    "sign_min_cosine": ("sign_min_cosine", float, 1.0),
}
_TOML_KEY_OF_FIELD = {field: f"[integrator] {key}" for key, (field, _, _) in _INTEGRATOR_KEYS.items()}
_TOML_KEY_OF_FIELD.update({"dt": "[integrator] dt_fs", "n_steps": "[integrator] duration_fs", "seed": "[initial_conditions] seed"})


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
    initial_state: int | None  # None: per frame, from the file (initial_state = "file")
    seed: int
    settings: FSSHSettings
    output: Path
    output_settings: OutputSettings

    @property
    def record_every(self) -> int:
        return self.output_settings.record_every

    @property
    def geometry_every(self) -> int:
        return self.output_settings.geometry_every

    @property
    def checkpoint_every(self) -> int:
        return self.output_settings.checkpoint_every


def _get(table: dict[str, Any], key: str, path: Path, section: str, kind: type, default: Any = ...) -> Any:
    """table[key] checked to be of `kind` (ints accepted as floats; floats must be finite)."""
    if key not in table:
        if default is ...:
            raise DataError(path, f"[{section}] {key}", "missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(path, f"[{section}] {key}", f"expected {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise DataError(path, f"[{section}] {key}", f"must be a finite number, got {value!r}")
    return value


def state_index(value: Any) -> int | None:
    """A state given as an index (0 = S0) or as 'S1', 'S2', ...; None if `value` is neither."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.upper().startswith("S") and value[1:].isdigit():
        return int(value[1:])
    return None


def parse_state(value: Any, path: Path) -> int:
    state = state_index(value)
    if state is None:
        raise DataError(path, "[initial_conditions] initial_state",
                        f"expected a state index (0 = S0), 'S1', 'S2', ... or 'file'; got {value!r}")
    return state


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
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
        if not isinstance(table, dict):
            raise DataError(path, f"[{section}]", "expected a table")
        unknown = set(table) - _SECTIONS[section]
        if unknown:
            raise DataError(path, f"[{section}] {sorted(unknown)[0]}", f"unknown key; expected one of {sorted(_SECTIONS[section])}")
    return text, data


def _integrator_settings(integ: dict[str, Any], ic: dict[str, Any], path: Path) -> FSSHSettings:
    """FSSHSettings from the [integrator] table (and the seed): keys left out take the dataclass defaults."""
    dt_fs = _get(integ, "dt_fs", path, "integrator", float)
    duration_fs = _get(integ, "duration_fs", path, "integrator", float)
    for key, value in (("dt_fs", dt_fs), ("duration_fs", duration_fs)):
        if value <= 0:
            raise DataError(path, f"[integrator] {key}", f"must be positive, got {value!r}")
    options: dict[str, Any] = {"dt": dt_fs * FS_IN_AU_TIME, "n_steps": int(round(duration_fs / dt_fs))}
    for key, (name, kind, factor) in _INTEGRATOR_KEYS.items():
        if key in integ:
            value = _get(integ, key, path, "integrator", kind)
            options[name] = value * factor if factor is not None else value
    if "seed" in ic:
        options["seed"] = _get(ic, "seed", path, "initial_conditions", int)
    try:
        return FSSHSettings(**options)
    except ConfigurationError as exc:
        raise DataError(path, _TOML_KEY_OF_FIELD.get(exc.where or "", "[integrator]"), exc.problem) from None


def _output_settings(out: dict[str, Any], path: Path) -> OutputSettings:
    options = {key: _get(out, key, path, "output", int) for key in ("record_every", "geometry_every", "checkpoint_every") if key in out}
    try:
        return OutputSettings(**options)
    except ConfigurationError as exc:
        raise DataError(path, f"[output] {exc.where}", exc.problem) from None


def load_config(path: str | Path) -> DynamicsConfig:
    """Read and check a dynamics TOML file; every problem names the file and the key."""
    path = Path(path)
    text, data = _read_toml(path)
    base = path.parent
    pot, ic, integ, out = (data.get(s, {}) for s in ("potential", "initial_conditions", "integrator", "output"))
    sampling = _get(ic, "sampling", path, "initial_conditions", str, "wigner")
    if sampling not in SAMPLINGS:
        raise DataError(path, "[initial_conditions] sampling", f"expected one of {SAMPLINGS}, got {sampling!r}")
    geometry_file = _get(ic, "file", path, "initial_conditions", str, None)
    if sampling == "file" and geometry_file is None:
        raise DataError(path, "[initial_conditions] file", "missing (needed for sampling = 'file')")
    momentum = _get(ic, "momentum", path, "initial_conditions", float, None)
    if sampling == "scattering" and momentum is None:
        raise DataError(path, "[initial_conditions] momentum", "missing (needed for sampling = 'scattering')")
    if momentum is not None and momentum <= 0:
        raise DataError(path, "[initial_conditions] momentum",
                        f"must be positive (the particle starts on the left moving right), got {momentum!r}")
    n_traj = _get(ic, "n_trajectories", path, "initial_conditions", int)
    if n_traj < 1:
        raise DataError(path, "[initial_conditions] n_trajectories", "must be at least 1")
    if ic.get("initial_state") == "file":
        if sampling != "file":
            raise DataError(path, "[initial_conditions] initial_state", f"'file' needs sampling = 'file', not {sampling!r}")
        initial_state = None
    else:
        initial_state = parse_state(ic.get("initial_state", 0), path)
    settings = _integrator_settings(integ, ic, path)
    return DynamicsConfig(
        path=path,
        text=text,
        potential_spec=_get(pot, "spec", path, "potential", str),
        device=_get(pot, "device", path, "potential", str, "cpu"),
        sampling=sampling,
        geometry_file=None if geometry_file is None else base / geometry_file,
        momentum=momentum,
        n_trajectories=n_traj,
        initial_state=initial_state,
        seed=settings.seed,
        settings=settings,
        output=base / _get(out, "file", path, "output", str, path.with_suffix(".h5").name),
        output_settings=_output_settings(out, path),
    )
