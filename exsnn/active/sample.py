"""Geometries and velocities for a campaign: the initial training set and the initial conditions of each iteration's
dynamics, both from Wigner sampling of the oracle's harmonic modes (or frames of a file), each from its own seeded
stream so that a resumed campaign draws exactly the same numbers."""

from __future__ import annotations

import numpy as np
import torch

from exsnn.active.config import CampaignConfig
from exsnn.dynamics.initial_conditions import from_file, wigner_harmonic
from exsnn.errors import ConfigurationError, DataError
from exsnn.photo.modes import HarmonicModes, check_same_molecule, read_modes
from exsnn.potentials.base import Potential

INITIAL_STREAM, DYNAMICS_STREAM = 101, 202


def campaign_modes(config: CampaignConfig) -> HarmonicModes:
    """The modes file of [initial] modes; a missing or unreadable file is an error naming that key."""
    assert config.initial.modes is not None
    path = config.resolve(config.initial.modes)
    try:
        return read_modes(path)
    except (DataError, ConfigurationError) as exc:
        detail = exc.problem if exc.where in (None, "file") else f"{exc.where}: {exc.problem}"
        raise ConfigurationError(f"{path}: {detail}", source=config.path, where="[initial] modes") from None


def _modes(config: CampaignConfig, oracle: Potential) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(reference (n, 3) Bohr, masses (n,) electron masses, frequencies (M,) Hartree, modes (3n, M)) of [initial] modes,
    else of the oracle itself (LVC models)."""
    if config.initial.modes is not None:
        modes = campaign_modes(config)
        check_same_molecule(modes, oracle.numbers.cpu().numpy(), f"{config.path}: [initial] modes")
        return modes.positions, modes.masses, modes.frequencies, modes.modes
    if not hasattr(oracle, "harmonic_modes"):
        raise ConfigurationError(f"Wigner sampling needs harmonic modes, which {oracle.describe()} does not provide; "
                                 "give [initial] modes (from exsnn frequencies) or [initial] file", source=config.path,
                                 where="[initial]")
    return oracle.harmonic_modes()  # type: ignore[attr-defined,no-any-return]


def initial_geometries(config: CampaignConfig, oracle: Potential) -> torch.Tensor:
    """The initial set (n_frames, n, 3) Bohr: Wigner samples with widths scaled by `spread`, or a file's frames."""
    n = config.initial.n_frames
    if config.initial.file is not None:
        path = config.resolve(config.initial.file)
        positions, _ = from_file(path, oracle.numbers.cpu().numpy())
        if len(positions) < n:
            raise ConfigurationError(f"{len(positions)} frames in {path}, {n} asked", source=config.path,
                                     where="[initial] n_frames")
        return positions[:n]
    reference, masses, frequencies, modes = _modes(config, oracle)
    # widths scale as 1/sqrt(w): a spread s is the ground state of modes with frequency w / s^2
    positions, _ = wigner_harmonic(reference, masses, frequencies / config.initial.spread**2, modes, n,
                                   seed=config.run.seed * 1000 + INITIAL_STREAM)
    return positions


def dynamics_initial_conditions(config: CampaignConfig, oracle: Potential, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and velocities (B, n, 3) of iteration `iteration`'s trajectories: fresh 0 K Wigner samples from a
    stream seeded by (seed, iteration), or the frames of [dynamics] file (the same every iteration)."""
    if config.dynamics.file is not None:
        path = config.resolve(config.dynamics.file)
        positions, velocities = from_file(path, oracle.numbers.cpu().numpy())
        if len(positions) < config.dynamics.n_trajectories:
            raise ConfigurationError(f"{len(positions)} frames in {path} for {config.dynamics.n_trajectories} trajectories",
                                     source=config.path, where="[dynamics] n_trajectories")
        return positions[: config.dynamics.n_trajectories], velocities[: config.dynamics.n_trajectories]
    reference, masses, frequencies, modes = _modes(config, oracle)
    return wigner_harmonic(reference, masses, frequencies, modes, config.dynamics.n_trajectories,
                           seed=(config.run.seed * 1000 + DYNAMICS_STREAM) * 1000 + iteration)
