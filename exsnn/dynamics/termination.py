"""When a trajectory ends: the time is up, it left the box, its total energy drifted too far, or it has relaxed to S0.

A trajectory whose total energy moves more than `max_energy_drift` from its start is marked FAILED (and left out of
population averages), as SHARC does with its energy-conservation check; one beyond [-box, box] in any coordinate
and moving away has LEFT_BOX (scattering); one that reached `n_steps` has FINISHED. Only trajectories that were
running at the start of the step change status. With `FSSHSettings.ground_state_end` one that has stayed in S0 that
long ends as RELAXED (SHARC's `killafter`; Mai, Marquetand, Gonzalez, WIREs Comput. Mol. Sci. 8, e1370 (2018)).
"""

from __future__ import annotations

import torch

from exsnn.dynamics.state import FAILED, FINISHED, LEFT_BOX, RELAXED, RUNNING, row_any


def update_status(
    status: torch.Tensor,
    running: torch.Tensor,
    positions: torch.Tensor,
    velocities: torch.Tensor,
    total_energy: torch.Tensor,
    total_energy0: torch.Tensor,
    step: int,
    n_steps: int,
    box: float | None,
    max_energy_drift: float,
) -> torch.Tensor:
    """New status (B,) long after `step`: status (B,), running (B,) bool at the start of the step, positions and
    velocities (B, n, 3), total energies now and at the start (B,) Hartree."""
    drift = (total_energy - total_energy0).abs() > max_energy_drift
    ended = torch.full_like(status, RUNNING)
    if box is not None:
        outside = row_any(((positions.abs() > box) & (positions * velocities > 0)).flatten(1))  # moving away
        ended = torch.where(outside, LEFT_BOX, ended)
    ended = torch.where(drift, FAILED, ended)
    if step >= n_steps:
        ended = torch.where(ended == RUNNING, FINISHED, ended)
    return torch.where(running, ended, status)


def ground_state_steps(ground_steps: torch.Tensor, running: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """(B,) long steps in S0 after a step: one more for running trajectories (running (B,) bool at its start) whose
    active state (B,) is S0, zero for running ones elsewhere; ended ones keep their count."""
    counted = torch.where(active == 0, ground_steps + 1, torch.zeros_like(ground_steps))
    return torch.where(running, counted, ground_steps)


def relax(status: torch.Tensor, ground_steps: torch.Tensor, steps_to_end: int) -> torch.Tensor:
    """New status (B,): RELAXED for the still running trajectories with at least `steps_to_end` steps in S0."""
    return torch.where((status == RUNNING) & (ground_steps >= steps_to_end), RELAXED, status)
