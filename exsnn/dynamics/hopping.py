"""Hops of fewest-switches surface hopping: target choice, energy-conserving velocity adjustment, frustrated hops,
and the forced hop to the ground state.

* Target: the first state j whose cumulative hopping probability exceeds the trajectory's uniform number zeta
  (Tully, J. Chem. Phys. 93, 1061 (1990)).
* Adjustment: v -> v - gamma u / m along u = d_aj (the NAC of the hop) or u = m v (the momentum), with gamma the
  root of a gamma^2 - b gamma + (E_j - E_a) = 0 (a = sum u^2 / 2m, b = v . u) closest to zero, so that the total energy
  is conserved (Hammes-Schiffer and Tully, J. Chem. Phys. 101, 4657 (1994)).
* Frustrated hops (no real root): the velocity is kept, its component along u reflected, or reflected only when
  the grad-V criterion holds: the forces of both states along u have opposite signs and the target force points
  against the motion (Jasper and Truhlar, Chem. Phys. Lett. 369, 60 (2003)).
* Forced hop: a trajectory whose active state lies less than a gap above S0 moves to S0, its velocity scaled to
  conserve the total energy (as SHARC's "hop to S0 below a gap" option).

Trajectories are rows of a batch (B of them, n atoms, N states, P pairs); the functions work on any subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from exsnn.dynamics.state import kinetic_energy

#: forces (K, n, 3) of `states` (K,) for the batch rows `rows` (K,) at the current positions; non-finite rows mean
#: the electronic structure failed there
TargetForces = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class HopOutcome:
    """What `attempt_hops` did to a batch of B trajectories."""

    velocities: torch.Tensor  # (B, n, 3) after rescaling or reflection
    active: torch.Tensor  # (B,) long, the target where the hop was accepted
    attempted: torch.Tensor  # (B,) bool, a hop was drawn
    frustrated: torch.Tensor  # (B,) bool, drawn but energetically forbidden
    failed: torch.Tensor  # (B,) bool, the grad-V check needed forces that the potential could not compute
    any_attempted: bool = True  # whether any hop was drawn (known on the host: callers need not ask the device)


def choose_targets(probabilities: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
    """Target state per trajectory (-1 for none): the first j with cumulative probability (B, N) above zeta (B,)."""
    if probabilities.shape[1] == 2:  # the same comparisons without the cumulative sum and arg-max (fewer passes)
        p0, p1 = probabilities.unbind(1)
        none = torch.where(p0 + p1 > zeta, 1, -1)
        return torch.where(p0 > zeta, 0, none)
    cumulative = torch.cumsum(probabilities, dim=1)
    above = cumulative > zeta[:, None]
    has = above.any(dim=1)
    first = torch.argmax(above.to(torch.int8), dim=1)
    return torch.where(has, first, torch.full_like(first, -1))


def rescaling_direction(
    mode: str, velocities: torch.Tensor, nacs: torch.Tensor, masses: torch.Tensor, source: torch.Tensor,
    target: torch.Tensor, pair_index: torch.Tensor,
) -> torch.Tensor:
    """Direction u (K, n, 3) of the velocity adjustment for hops source -> target (K,): the NAC d_st of each
    trajectory (nacs (K, P, n, 3), pair_index (N, N) from `PairTable`) for mode 'nac', the momentum m v for
    'velocity'."""
    if mode == "velocity":
        return velocities * masses[None, :, None]
    return nacs[torch.arange(len(source), device=nacs.device), pair_index[source, target]]


def attempt_hops(
    velocities: torch.Tensor,
    active: torch.Tensor,
    target: torch.Tensor,
    energies: torch.Tensor,
    nacs: torch.Tensor,
    forces: torch.Tensor,
    masses: torch.Tensor,
    pair_index: torch.Tensor,
    rescale: str = "nac",
    frustrated_mode: str = "keep",
    target_forces: TargetForces | None = None,
) -> HopOutcome:
    """Carry out the hops active -> target (B,) (-1: none) of B trajectories with velocities (B, n, 3), energies
    (B, N), sign-aligned NACs (B, P, n, 3), active-state forces (B, n, 3) and masses (n,).

    rescale: 'nac' or 'velocity'; frustrated_mode: 'keep', 'reflect' or 'reflect_gradv' (which needs
    `target_forces`). Accepted hops conserve kinetic + potential energy exactly (to round-off).
    """
    attempted = target >= 0
    frustrated = torch.zeros_like(attempted)
    failed = torch.zeros_like(attempted)
    new_active = active.clone()
    if not bool(attempted.any()):
        return HopOutcome(velocities, new_active, attempted, frustrated, failed, any_attempted=False)
    idx = torch.nonzero(attempted)[:, 0]
    src, dst = active[idx], target[idx]
    u = rescaling_direction(rescale, velocities[idx], nacs[idx], masses, src, dst, pair_index)
    m = masses[None, :, None]
    a = 0.5 * (u.square() / m).sum((1, 2))
    b = (velocities[idx] * u).sum((1, 2))
    available = energies[idx, src] - energies[idx, dst]
    discriminant = b**2 + 4 * a * available
    ok = (discriminant >= 0) & (a > 0)
    root = torch.sqrt(discriminant.clamp_min(0.0))
    gamma = torch.where(b >= 0, (b - root) / (2 * a.clamp_min(1e-300)), (b + root) / (2 * a.clamp_min(1e-300)))
    v = velocities.clone()
    v[idx[ok]] = v[idx[ok]] - gamma[ok, None, None] * u[ok] / m
    new_active[idx[ok]] = dst[ok]
    frustrated[idx[~ok]] = True
    if bool((~ok).any()) and frustrated_mode != "keep":
        reflect = ~ok & (a > 0)
        if frustrated_mode == "reflect_gradv" and bool(reflect.any()):
            if target_forces is None:
                raise TypeError("frustrated_mode 'reflect_gradv' needs target_forces")
            which = torch.nonzero(reflect)[:, 0]
            f_target = target_forces(idx[which], dst[which])
            usable = torch.isfinite(f_target).flatten(1).all(1)
            failed[idx[which[~usable]]] = True
            f_active_u = (forces[idx[which]] * u[which]).sum((1, 2))
            f_target_u = (f_target * u[which]).sum((1, 2))
            reflect[which] = usable & (f_active_u * f_target_u < 0) & (f_target_u * b[which] < 0)
        sel = torch.nonzero(reflect)[:, 0]
        v[idx[sel]] = v[idx[sel]] - (b[sel] / a[sel])[:, None, None] * u[sel] / m
    return HopOutcome(v, new_active, attempted, frustrated, failed)


def forced_hops_to_ground(
    velocities: torch.Tensor, active: torch.Tensor, coefficients: torch.Tensor, energies: torch.Tensor,
    masses: torch.Tensor, gap: float, allowed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the `allowed` (B,) trajectories whose active state lies less than `gap` (Hartree) above S0 to S0, with
    all population on S0 and the velocity scaled to keep the total energy. Returns velocities (B, n, 3), active
    (B,), coefficients (B, N) and the rows that hopped (K,) long."""
    rows = torch.arange(len(active), device=active.device)
    above_ground = energies[rows, active] - energies[:, 0]
    forced = torch.nonzero(allowed & (active > 0) & (above_ground < gap))[:, 0]
    if len(forced) == 0:
        return velocities, active, coefficients, forced
    kinetic = kinetic_energy(velocities[forced], masses)
    scale = torch.sqrt((kinetic + above_ground[forced]) / kinetic.clamp_min(1e-300))
    velocities, active, coefficients = velocities.clone(), active.clone(), coefficients.clone()
    velocities[forced] = velocities[forced] * scale[:, None, None]
    active[forced] = 0
    coefficients[forced] = 0
    coefficients[forced, 0] = 1
    return velocities, active, coefficients, forced
