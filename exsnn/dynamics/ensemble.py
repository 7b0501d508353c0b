"""Run a configured ensemble: potential + initial conditions + engine + run file, resumable after any crash.

Everything that can fail on the input (the configuration, the potential, the initial conditions, the potential at
the starting structures) is done before a run file is written, so a failing `--overwrite` leaves an old run as it
was."""

from __future__ import annotations

import sys
import tomllib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from exsnn.dynamics.config import DynamicsConfig
from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.initial_conditions import (
    frame_states,
    from_file,
    initial_states_from_file,
    read_numbers,
    wigner_harmonic,
)
from exsnn.dynamics.runfile import RunMetadata, RunWriter, load_checkpoint, open_run, read_config_text
from exsnn.dynamics.scattering import sample_initial_conditions
from exsnn.dynamics.state import FAILED_STATUSES, STATUS_NAMES
from exsnn.errors import DataError, ExsnnWarning
from exsnn.potentials.base import Potential
from exsnn.potentials.spec import load_potential


@dataclass
class EnsembleSummary:
    output: str
    steps: int
    time_fs: float
    classical_populations: list[float]
    quantum_populations: list[float]
    hops: int
    frustrated_hops: int
    forced_hops: int
    status_counts: dict[str, int]
    resumed_from_step: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def initial_conditions(config: DynamicsConfig, potential: Potential) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and velocities (B, n, 3) as the config asks."""
    n = config.n_trajectories
    if config.sampling == "wigner":
        if not hasattr(potential, "harmonic_modes"):
            raise DataError(
                config.path,
                "[initial_conditions] sampling",
                f"'wigner' needs harmonic modes, which {potential.describe()} does not provide; use sampling = 'file'",
            )
        reference, masses, frequencies, modes = potential.harmonic_modes()  # type: ignore[attr-defined]
        return wigner_harmonic(reference, masses, frequencies, modes, n, config.seed)
    if config.sampling == "scattering":
        if potential.n_atoms != 1:
            raise DataError(config.path, "[initial_conditions] sampling", "'scattering' is for one-dimensional models")
        return sample_initial_conditions(n, float(config.momentum), float(potential.masses[0]), config.seed)  # type: ignore[arg-type]
    assert config.geometry_file is not None
    positions, velocities = from_file(config.geometry_file, potential.numbers.cpu().numpy())
    if len(positions) < n:
        raise DataError(config.geometry_file, "frames", f"{len(positions)} geometries for {n} trajectories")
    return positions[:n], velocities[:n]


def initial_states(config: DynamicsConfig, n_states: int) -> torch.Tensor:
    """(B,) long: the initial state of each trajectory, one for all or, with initial_state = "file", each frame's."""
    n = config.n_trajectories
    if config.initial_state is None:
        assert config.geometry_file is not None  # load_config allows "file" only with sampling = "file"
        return initial_states_from_file(config.geometry_file, n, n_states)
    if config.initial_state >= n_states:
        raise DataError(
            config.path,
            "[initial_conditions] initial_state",
            f"S{config.initial_state} does not exist: the potential has {n_states} states",
        )
    if config.sampling == "file" and config.geometry_file is not None:
        named = set(frame_states(config.geometry_file, n) or []) - {None, config.initial_state}
        if named:
            warnings.warn(
                f"{config.geometry_file}: frames name initial states {', '.join(f'S{s}' for s in sorted(named))}, but "
                f"every trajectory starts in S{config.initial_state} ([initial_conditions] initial_state of {config.path}); "
                "set initial_state = \"file\" to start each in its frame's state",
                ExsnnWarning,
                stacklevel=2,
            )
    return torch.full((n,), config.initial_state, dtype=torch.long)


def same_input(started_with: str, now: str) -> bool:
    """Whether two TOML inputs ask for the same run: equal tables (comments, spacing and key order do not count)."""
    try:
        return tomllib.loads(started_with) == tomllib.loads(now)
    except tomllib.TOMLDecodeError:
        return started_with == now


def run_ensemble(
    config: DynamicsConfig, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> EnsembleSummary:
    """Run (or resume) the ensemble described by `config`; return what happened."""
    numbers = read_numbers(config.geometry_file) if config.geometry_file is not None else None
    potential = load_potential(config.potential_spec, config.path.parent, config.device, numbers=numbers)
    if config.initial_state is not None and config.initial_state >= potential.n_states:
        raise DataError(
            config.path,
            "[initial_conditions] initial_state",
            f"S{config.initial_state} does not exist: the potential has {potential.n_states} states",
        )
    engine = FSSHEngine(potential, config.settings)
    metadata = RunMetadata(
        settings=config.settings.as_dict(),
        potential=config.potential_spec,
        numbers=potential.numbers.cpu().numpy(),
        masses=potential.masses.cpu().numpy(),
        n_states=potential.n_states,
        n_trajectories=config.n_trajectories,
        output=config.output_settings,
        config=config.text,
    )
    resumed_from = None
    if resume and config.output.exists():
        if not same_input(read_config_text(config.output), config.text):
            raise DataError(
                config.path,
                "file",
                f"differs from the configuration {config.output} was started with; resume needs the same input",
            )
        state = load_checkpoint(config.output, engine.device)
        if state is None:
            raise DataError(
                config.output,
                "checkpoint",
                "missing: the run never committed a checkpoint; start it again with --overwrite",
            )
        writer = RunWriter(config.output, metadata, engine.total_energy)
        resumed_from = state.step
    else:
        if config.output.exists() and not overwrite:
            raise DataError(config.output, "file", "already exists (use --resume to continue it, or --overwrite)")
        positions, velocities = initial_conditions(config, potential)
        states = initial_states(config, potential.n_states)
        state = engine.initial_state(positions, velocities, states)
        writer = RunWriter.create(config.output, metadata, engine.total_energy, state, overwrite=overwrite)
    bar = tqdm(
        total=config.settings.n_steps,
        initial=state.step,
        unit="step",
        disable=not progress,
        file=sys.stderr,
        desc=f"FSSH {config.n_trajectories} traj",
    )
    engine.run(state, observer=writer.record, progress=lambda step: bar.update(step - bar.n))
    bar.close()
    writer.commit(state)
    return summarize_run(str(config.output), resumed_from)


def summarize_run(path: str, resumed_from: int | None = None) -> EnsembleSummary:
    """Final populations, hop counts and trajectory outcomes of a run file."""
    with open_run(path) as h5:
        active = h5["steps/active"][-1]
        status = h5["steps/status"][-1]
        populations = h5["steps/populations"][-1]
        n_states = int(h5.attrs["n_states"])
        step = int(h5["steps/step"][-1])
        time = float(h5["steps/time"][-1])
        hops = (
            {k: h5[f"hops/{k}"][()] for k in ("frustrated", "kind")}
            if "hops" in h5
            else {"frustrated": np.zeros(0, bool), "kind": np.zeros(0)}
        )
    valid = ~np.isin(status, FAILED_STATUSES)
    classical = np.bincount(active[valid], minlength=n_states) / max(int(valid.sum()), 1)
    quantum = populations[valid].mean(axis=0) if valid.any() else np.zeros(n_states)
    from exsnn.units import AU_TIME_IN_FS

    return EnsembleSummary(
        output=path,
        steps=step,
        time_fs=time * AU_TIME_IN_FS,
        classical_populations=[float(x) for x in classical],
        quantum_populations=[float(x) for x in quantum],
        hops=int(((~hops["frustrated"]) & (hops["kind"] == 0)).sum()),
        frustrated_hops=int(hops["frustrated"].sum()),
        forced_hops=int((hops["kind"] == 1).sum()),
        status_counts={STATUS_NAMES[k]: int((status == k).sum()) for k in STATUS_NAMES if (status == k).any()},
        resumed_from_step=resumed_from,
    )
