"""Scattering ensembles on one-dimensional two-state models (Tully's models): reflection and transmission.

Trajectories start on the lower adiabatic state, sampled from the Wigner distribution of the Gaussian wavepacket
that `exsnn.validation.wavepacket` propagates exactly (position spread sigma = 20 / k around x0 = -(10 + 3 sigma),
momentum spread 1 / (2 sigma)), or all at (x0, k) with `sampling="fixed"`. They run until they leave the box
|x| > |x0| moving outward (ended trajectories stay in the batch, moving freely, until fewer than 70 % run; then
the batch is compacted, keeping every trajectory's random numbers). Counting reflection (x < 0) and transmission
(x > 0) on each state gives probabilities
with binomial standard errors sqrt(p (1 - p) / N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.settings import FSSHSettings
from exsnn.dynamics.state import FAILED, LEFT_BOX, RUNNING
from exsnn.errors import ConfigurationError
from exsnn.potentials.tully import TullyPotential

OUTCOMES = ("R_lower", "T_lower", "R_upper", "T_upper")
SAMPLINGS = ("wigner", "fixed")
COMPACT_BELOW = 0.7  # drop ended trajectories from the batch once fewer than this fraction still run
#: settings in which scattering differs from FSSHSettings' defaults: Tully's FSSH without decoherence, and ended
#: trajectories moving freely in the asymptotic region (neither side nor state can change there: stepping them
#: along is cheaper than gathering the running ones every step)
SCATTERING_SETTINGS: dict[str, Any] = {"decoherence": "none", "propagate_finished": True}


@dataclass
class ScatteringResult:
    probabilities: dict[str, float]
    errors: dict[str, float]
    n_trajectories: int
    n_failed: int
    n_unfinished: int
    settings: dict[str, Any] = field(default_factory=dict)
    steps_run: int = 0  # nuclear steps taken until every trajectory had ended

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.probabilities)
        out.update({f"{k}_err": v for k, v in self.errors.items()})
        out.update(
            {"n_trajectories": self.n_trajectories, "n_failed": self.n_failed, "n_unfinished": self.n_unfinished}
        )
        return out


def check_momentum(momentum: float) -> None:
    """ConfigurationError unless the mean momentum (a.u.) is positive and finite."""
    if not momentum > 0 or not math.isfinite(momentum):
        raise ConfigurationError(
            f"must be positive (the particle starts on the left moving right), got {momentum!r}", where="momentum"
        )


def default_start(momentum: float) -> tuple[float, float]:
    """(x0, sigma) of the initial wavepacket for mean momentum `momentum`."""
    sigma = 20.0 / momentum
    return -(10.0 + 3.0 * sigma), sigma


def sample_initial_conditions(
    n: int, momentum: float, mass: float, seed: int, sampling: str = "wigner"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and velocities (n, 1, 3) for a scattering ensemble."""
    check_momentum(momentum)
    x0, sigma = default_start(momentum)
    positions = torch.zeros((n, 1, 3), dtype=torch.float64)
    velocities = torch.zeros((n, 1, 3), dtype=torch.float64)
    if sampling == "wigner":
        rng = np.random.default_rng([seed, 0x5CA7])  # a stream of its own, apart from the hopping numbers
        positions[:, 0, 0] = torch.as_tensor(rng.normal(x0, sigma, n))
        velocities[:, 0, 0] = torch.as_tensor(rng.normal(momentum, 1.0 / (2.0 * sigma), n)) / mass
    elif sampling == "fixed":
        positions[:, 0, 0] = x0
        velocities[:, 0, 0] = momentum / mass
    else:
        raise ConfigurationError(f"must be one of {SAMPLINGS}, got {sampling!r}", where="sampling")
    return positions, velocities


def default_time_step(momentum: float, mass: float) -> float:
    """A time step (atomic units) moving the particle about 0.025 Bohr, at most 5."""
    return min(5.0, 0.025 * mass / momentum)


def run_scattering(
    model: str,
    momentum: float,
    n_trajectories: int,
    seed: int = 0,
    dt: float | None = None,
    sampling: str = "wigner",
    device: str = "cpu",
    **settings: Any,
) -> ScatteringResult:
    """Run a scattering ensemble on Tully model `model` and count the outcomes; `settings` override
    SCATTERING_SETTINGS and FSSHSettings' defaults."""
    if n_trajectories < 1:
        raise ConfigurationError(f"must be at least 1, got {n_trajectories}", where="n_trajectories")
    check_momentum(momentum)
    potential = TullyPotential(model, device=device)
    mass = float(potential.masses[0])
    dt = dt or default_time_step(momentum, mass)
    x0, _ = default_start(momentum)
    n_steps = int(math.ceil(8.0 * abs(x0) * mass / momentum / dt)) + 2000
    options = {**SCATTERING_SETTINGS, **settings}
    fssh = FSSHSettings(dt=dt, n_steps=n_steps, box=abs(x0), seed=seed, **options)
    engine = FSSHEngine(potential, fssh)
    positions, velocities = sample_initial_conditions(n_trajectories, momentum, mass, seed, sampling)
    state = engine.initial_state(positions, velocities, torch.zeros(n_trajectories, dtype=torch.long))
    final_x = torch.zeros(n_trajectories, dtype=torch.float64, device=engine.device)
    final_active = torch.zeros(n_trajectories, dtype=torch.long, device=engine.device)
    final_status = torch.zeros(n_trajectories, dtype=torch.long, device=engine.device)
    ids = torch.arange(n_trajectories, device=engine.device)

    def store(part: torch.Tensor) -> None:
        final_x[ids[part]] = state.positions[part, 0, 0]
        final_active[ids[part]] = state.active[part]
        final_status[ids[part]] = state.status[part]

    while state.step < fssh.n_steps and bool((state.status == RUNNING).any()):
        engine.step(state)
        running = state.status == RUNNING
        if int(running.sum()) < COMPACT_BELOW * state.n_trajectories:  # drop the ended ones from the batch
            store(torch.nonzero(~running)[:, 0])
            keep = torch.nonzero(running)[:, 0]
            ids = ids[keep]
            state = state.select(keep)
    store(torch.arange(state.n_trajectories, device=engine.device))
    done = final_status == LEFT_BOX
    x = final_x
    counts = {
        "R_lower": done & (x < 0) & (final_active == 0),
        "T_lower": done & (x > 0) & (final_active == 0),
        "R_upper": done & (x < 0) & (final_active == 1),
        "T_upper": done & (x > 0) & (final_active == 1),
    }
    N = n_trajectories
    probabilities = {k: float(v.sum()) / N for k, v in counts.items()}
    errors = {k: math.sqrt(max(p * (1 - p), 1.0 / N) / N) for k, p in probabilities.items()}
    return ScatteringResult(
        probabilities=probabilities,
        errors=errors,
        n_trajectories=N,
        n_failed=int((final_status == FAILED).sum()),
        n_unfinished=int((~done & (final_status != FAILED)).sum()),
        settings={
            "model": model,
            "momentum": momentum,
            "dt": dt,
            "n_steps": n_steps,
            "sampling": sampling,
            **fssh.as_dict(),
        },
        steps_run=state.step,
    )
