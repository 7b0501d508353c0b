"""The ensemble state of surface hopping, the hop events of a step, trajectory status codes and the per-trajectory
energies derived from them.

Everything is batched over B trajectories (N states, n atoms, P = N(N-1)/2 pairs), float64 (complex128 for the
electronic coefficients) on the engine's device. Per-trajectory quantities are computed with elementwise operations
and row reductions only (no matrix-vector products, whose rounding depends on the batch), so a trajectory's numbers
do not depend on which other trajectories share its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

import torch

RUNNING, FINISHED, LEFT_BOX, FAILED, ELECTRONIC_FAILURE = 0, 1, 2, 3, 4
#: stopped by an active-learning campaign where its committee disagreed too much (`exsnn.active.simulate`)
UNCERTAIN = 5
#: ended after `FSSHSettings.ground_state_end` in S0 (SHARC's `killafter`): it stays in S0 in the populations
RELAXED = 6
STATUS_NAMES = {RUNNING: "running", FINISHED: "finished", LEFT_BOX: "left box", FAILED: "failed (energy drift)",
                ELECTRONIC_FAILURE: "failed (electronic structure)", UNCERTAIN: "stopped (committee uncertain)",
                RELAXED: "relaxed to S0"}
FAILED_STATUSES = (FAILED, ELECTRONIC_FAILURE)  # trajectories left out of population averages

FSSH_HOP, FORCED_HOP = 0, 1  # HopEvents.kind


@dataclass
class EnsembleState:
    """Everything needed to continue an ensemble (B trajectories). Tensors on the engine's device, float64."""

    step: int
    positions: torch.Tensor  # (B, n, 3) Bohr
    velocities: torch.Tensor  # (B, n, 3) Bohr / atomic time
    coefficients: torch.Tensor  # (B, N) complex128
    active: torch.Tensor  # (B,) long
    energies: torch.Tensor  # (B, N) Hartree
    forces: torch.Tensor  # (B, n, 3) active-state forces, Hartree / Bohr
    nacs: torch.Tensor  # (B, P, n, 3) sign-aligned NACs at the current positions, 1 / Bohr
    status: torch.Tensor  # (B,) long, RUNNING / FINISHED / LEFT_BOX / FAILED / ELECTRONIC_FAILURE / RELAXED
    total_energy0: torch.Tensor  # (B,) Hartree
    state_vectors: torch.Tensor | None = None  # (B, K, N) sign-tracked state vectors, when the potential gives them
    couplings: torch.Tensor | None = None  # (B, P) v . d_ij at the current step (kept to avoid recomputing it)
    previous_gaps: torch.Tensor | None = None  # (B, P) |E_j - E_i| one step back (curvature couplings; NaN: unknown)
    ground_steps: torch.Tensor | None = None  # (B,) long: steps spent in S0 since the last arrival (ground_state_end)
    trajectory_ids: torch.Tensor | None = None  # (B,) ids in the original ensemble after `select` (None: 0..B-1)
    n_total: int | None = None  # size of the original ensemble (random numbers are drawn for all of it)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that a checkpoint stores (every field but `step` and `n_total` that is set)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("step", "n_total") and getattr(self, f.name) is not None
        }

    @property
    def n_trajectories(self) -> int:
        return int(self.positions.shape[0])

    def ids(self) -> torch.Tensor:
        """(B,) long: the id of each trajectory in the original ensemble (what potentials key their memory by)."""
        if self.trajectory_ids is not None:
            return self.trajectory_ids
        return torch.arange(self.n_trajectories, device=self.positions.device)

    def select(self, index: torch.Tensor) -> EnsembleState:
        """A smaller ensemble holding the trajectories at `index` (B',); they keep their ids and random numbers."""
        picked = {name: tensor[index] for name, tensor in self.tensors().items() if name != "trajectory_ids"}
        return EnsembleState(step=self.step, **picked, trajectory_ids=self.ids()[index], n_total=self.n_total or self.n_trajectories)


@dataclass
class HopEvents:
    """Hops of one step: trajectory id, from, to, frustrated flag, kind (FSSH_HOP or FORCED_HOP to S0).

    `FSSHEngine.step` returns them with the state after the step, whose positions and energies are those at which
    the hops happened (hops of trajectories sent back to their last good step are dropped); the run file stores
    them as the hop geometry and gap."""

    step: int
    trajectory: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    frustrated: torch.Tensor
    kind: torch.Tensor

    @staticmethod
    def empty(step: int, device: torch.device) -> HopEvents:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return HopEvents(step, z, z, z, z.bool(), z)

    def extend(self, other: HopEvents) -> HopEvents:
        cat = lambda a, b: torch.cat([a, b])  # noqa: E731
        return HopEvents(self.step, cat(self.trajectory, other.trajectory), cat(self.source, other.source),
                         cat(self.target, other.target), cat(self.frustrated, other.frustrated), cat(self.kind, other.kind))

    def without(self, trajectories: torch.Tensor) -> HopEvents:
        """These events less those of `trajectories` (ids, (K,) long)."""
        if len(trajectories) == 0 or len(self.trajectory) == 0:
            return self
        keep = ~torch.isin(self.trajectory, trajectories)
        return HopEvents(self.step, self.trajectory[keep], self.source[keep], self.target[keep], self.frustrated[keep],
                         self.kind[keep])


class StepObserver(Protocol):
    def __call__(self, state: EnsembleState, hops: HopEvents) -> None: ...


def populations(coefficients: torch.Tensor) -> torch.Tensor:
    """|c|^2, (B, N) float64 from complex coefficients (B, N)."""
    return coefficients.real**2 + coefficients.imag**2


_FEW_COLUMNS = 4  # up to this many, reductions over the last axis go column by column (torch's are slow for them)


def _fold(values: torch.Tensor, combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
          reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Reduce the last axis with `combine` column by column when it is short, else with `reduce`."""
    if values.shape[-1] > _FEW_COLUMNS or values.shape[-1] == 0:
        return reduce(values)
    result = values[..., 0]
    for k in range(1, values.shape[-1]):
        result = combine(result, values[..., k])
    return result


def row_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis, each row on its own (the same bits whatever the other rows: no matrix products)."""
    return _fold(values, torch.add, lambda t: t.sum(-1))


def row_max(values: torch.Tensor) -> torch.Tensor:
    """Maximum over the last axis."""
    return _fold(values, torch.maximum, lambda t: t.amax(-1))


def row_min(values: torch.Tensor) -> torch.Tensor:
    """Minimum over the last axis."""
    return _fold(values, torch.minimum, lambda t: t.amin(-1))


def row_any(values: torch.Tensor) -> torch.Tensor:
    """Logical or over the last axis of a bool tensor."""
    return _fold(values, torch.logical_or, lambda t: t.any(-1))


def kinetic_energy(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B,) kinetic energies (Hartree) of velocities (B, n, 3) with masses (n,)."""
    return 0.5 * row_sum((velocities.square() * masses[:, None]).flatten(1))


def total_energy(energies: torch.Tensor, active: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B,) potential energy of the active state plus kinetic energy, Hartree."""
    return energies.gather(1, active[:, None])[:, 0] + kinetic_energy(velocities, masses)
