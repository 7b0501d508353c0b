"""Batched fewest-switches surface hopping (Tully, J. Chem. Phys. 93, 1061 (1990)) in PyTorch, float64, on CPU or
GPU: the engine that orchestrates one nuclear step of every running trajectory (B of them, N states, n atoms).

1. velocity Verlet on the active state's force, one potential call for the whole batch at the new positions
   (energies, active-state forces, NACs; `trajectories=` the ids of the structures' trajectories);
2. state signs tracked from the previous step, NACs sign-aligned: by the state vectors' overlaps
   (`electronic.align_signs`) or, without state vectors, by the NACs' overlaps, bisecting the step where they are
   unsure (`sign_tracking`);
3. electronic coefficients and hopping probabilities over the step, each trajectory with its own substeps
   (`electronic.propagate_coefficients`);
4. one uniform number per trajectory and step (`electronic.step_uniforms`, keyed by seed, step and trajectory id)
   picks the hop; hops rescale the velocity, frustrated ones keep or reflect it (`hopping`); the forces of a new
   active state are recomputed;
5. a decoherence correction (`decoherence.SCHEMES[settings.decoherence]`);
6. optional forced hop to S0 below a gap (`hopping.forced_hops_to_ground`);
7. a trajectory for which any potential call of the step failed (non-finite output) goes back to its last good step
   and ends as ELECTRONIC_FAILURE (`failures`); the others end by time, box or energy drift, or after
   `ground_state_end` in S0 (`termination`).

The engine's arithmetic is per trajectory (see `electronic` and `state`): a trajectory's numbers do not depend on the
trajectories beside it in the batch as long as the potential's do not; random numbers never do, so a run resumes
bit-identically. This module re-exports the names that other code imports from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from exsnn.data.phases import pair_signs
from exsnn.dynamics.curvature import curvature_couplings, pair_gaps, pair_index
from exsnn.dynamics.decoherence import Decoherence, DecoherenceInput, make_decoherence
from exsnn.dynamics.electronic import (
    PairTable,
    align_signs,
    auto_substeps,
    propagate_coefficients,
    state_signs_from_vectors,
    step_uniforms,
    velocity_couplings,
)
from exsnn.dynamics.failures import failed_rows, keep_previous, keep_rows, non_finite_rows
from exsnn.dynamics.fusion import Fused
from exsnn.dynamics.hopping import attempt_hops, choose_targets, forced_hops_to_ground
from exsnn.dynamics.settings import FSSHSettings
from exsnn.dynamics.sign_tracking import track_signs
from exsnn.dynamics.state import (
    ELECTRONIC_FAILURE,
    FAILED,
    FAILED_STATUSES,
    FINISHED,
    FORCED_HOP,
    FSSH_HOP,
    LEFT_BOX,
    RELAXED,
    RUNNING,
    STATUS_NAMES,
    EnsembleState,
    HopEvents,
    StepObserver,
    kinetic_energy,
    populations,
    total_energy,
)
from exsnn.dynamics.termination import ground_state_steps, relax, update_status
from exsnn.errors import ElectronicStructureError
from exsnn.potentials.base import Potential, PotentialOutput

__all__ = [
    "ELECTRONIC_FAILURE", "FAILED", "FAILED_STATUSES", "FINISHED", "FORCED_HOP", "FSSH_HOP", "LEFT_BOX", "RELAXED", "RUNNING",
    "STATUS_NAMES", "EnsembleState", "FSSHEngine", "HopEvents", "StepObserver", "kinetic_energy", "populations",
    "state_signs_from_vectors", "step_uniforms", "velocity_couplings",
]


class FSSHEngine:
    """Propagates an ensemble on any `Potential` (see the module docstring for one step)."""

    def __init__(self, potential: Potential, settings: FSSHSettings) -> None:
        self.potential = potential
        self.settings = settings
        self.device = potential.device
        self.masses = potential.masses.to(self.device, torch.float64)
        self.n_states = potential.n_states
        self.pairs = PairTable(self.n_states, self.device)
        self._gap_pairs = pair_index(self.n_states, self.device)  # (P, 2), for curvature couplings
        self._decoherence: Decoherence | None = None
        self._fused: dict[str, Fused] = {}

    @property
    def decoherence(self) -> Decoherence:
        """The scheme that `settings.decoherence` names (rebuilt if the settings change)."""
        if self._decoherence is None or self._decoherence.name != self.settings.decoherence \
                or self._decoherence.settings is not self.settings:
            self._decoherence = make_decoherence(self.settings)
        return self._decoherence

    def _kernel(self, name: str, function: Callable[..., object]) -> Fused:
        """`function`, fused when `settings.compile` asks (rebuilt if the setting changes)."""
        kernel = self._fused.get(name)
        if kernel is None or kernel.enabled != self.settings.compile:
            kernel = self._fused[name] = Fused(function, self.settings.compile, name)
        return kernel

    # ------------------------------------------------------------------ set-up
    def initial_state(
        self,
        positions: torch.Tensor,
        velocities: torch.Tensor,
        states: torch.Tensor,
        coefficients: torch.Tensor | None = None,
    ) -> EnsembleState:
        """Start trajectories at positions/velocities (B, n, 3) on `states` (B,); coefficients default to the
        active state. ElectronicStructureError if the potential fails at a starting structure."""
        positions = positions.to(self.device, torch.float64)
        velocities = velocities.to(self.device, torch.float64)
        states = states.to(self.device, torch.long)
        if coefficients is None:
            coefficients = torch.nn.functional.one_hot(states, self.n_states).to(torch.complex128)
        ids = torch.arange(len(states), device=self.device)
        curvature = self.settings.couplings == "curvature"
        out = self.potential.compute(positions, states=states, nacs=not curvature, trajectories=ids)
        broken = non_finite_rows(out)
        if bool(broken.any()):
            raise ElectronicStructureError(f"the potential failed at starting structures {torch.nonzero(broken)[:, 0].tolist()}")
        nacs = self._nacs_or_zeros(out, positions)
        return EnsembleState(
            step=0,
            positions=positions,
            velocities=velocities,
            coefficients=coefficients.to(self.device, torch.complex128),
            active=states,
            energies=out.energies,
            forces=out.forces,  # type: ignore[arg-type]
            nacs=nacs,
            status=torch.zeros(len(states), dtype=torch.long, device=self.device),
            total_energy0=total_energy(out.energies, states, velocities, self.masses),
            state_vectors=None if out.state_vectors is None else out.state_vectors.to(torch.float64),
            couplings=torch.zeros((len(states), self.pairs.n_pairs), dtype=torch.float64, device=self.device)
            if curvature else velocity_couplings(velocities, nacs),
            previous_gaps=torch.full((len(states), self.pairs.n_pairs), torch.nan, dtype=torch.float64, device=self.device)
            if curvature else None,
            ground_steps=None if self.settings.ground_state_end is None else torch.zeros_like(states),
        )

    def _nacs_or_zeros(self, out: PotentialOutput, positions: torch.Tensor) -> torch.Tensor:
        if out.nacs is not None:
            return out.nacs
        return torch.zeros((len(positions), self.pairs.n_pairs, *positions.shape[1:]), dtype=torch.float64, device=self.device)

    def _forces(self, positions: torch.Tensor, states: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forces (K, n, 3) of `states` at positions (K, n, 3) of trajectories `ids`, and (K,) True where they failed."""
        out = self.potential.compute(positions, states=states, nacs=False, trajectories=ids)
        assert out.forces is not None, "the potential must return the forces of the states it is asked for"
        return out.forces, non_finite_rows(out)

    def _refresh_forces(self, forces: torch.Tensor, rows: torch.Tensor, states: torch.Tensor, positions: torch.Tensor,
                        ids: torch.Tensor, broken: torch.Tensor) -> torch.Tensor:
        """`forces` (B, n, 3) with the rows `rows` (K,) recomputed for their new active `states` (K,); rows whose
        calculation failed are marked in `broken` (B,) (in place)."""
        refreshed, failed = self._forces(positions[rows], states, ids[rows])
        forces = forces.clone()
        forces[rows] = refreshed
        broken[rows[failed]] = True
        return forces

    # ------------------------------------------------------------------ one step
    def step(self, state: EnsembleState) -> HopEvents:
        """Advance every running trajectory by one step (in place); return the hops of this step.

        With `settings.propagate_finished` every trajectory is stepped (no gathering of the running ones); ended
        trajectories keep their status. This is cheaper for analytic models whose ended trajectories sit in an
        asymptotic region where nothing changes any more (scattering).
        """
        s = self.settings
        step_number = state.step + 1
        hops = HopEvents.empty(step_number, self.device)
        running = state.status == RUNNING
        n_running = int(running.sum())  # one host synchronisation for "any" and "all"
        if n_running == 0:
            state.step = step_number
            return hops
        everything = s.propagate_finished or n_running == state.n_trajectories
        run = torch.arange(state.n_trajectories, device=self.device) if everything else torch.nonzero(running)[:, 0]
        take = (lambda t: t) if everything else (lambda t: t[run])  # noqa: E731
        ids = take(state.ids()) if state.trajectory_ids is not None else run
        kick = (0.5 * s.dt / self.masses)[None, :, None]  # half a step's velocity change per unit force
        R, v, F = take(state.positions), take(state.velocities), take(state.forces)
        active, c = take(state.active), take(state.coefficients)
        E_old, d_old = take(state.energies), take(state.nacs)
        vectors_old = take(state.state_vectors) if state.state_vectors is not None else None
        T_old = take(state.couplings) if state.couplings is not None else velocity_couplings(v, d_old)

        curvature = s.couplings == "curvature"
        gaps_before = take(state.previous_gaps) if curvature and state.previous_gaps is not None else None

        # nuclei: velocity Verlet, one potential call
        v_half = v + F * kick
        R_new = R + s.dt * v_half
        out = self.potential.compute(R_new, states=active, nacs=not curvature, trajectories=ids)
        failed = failed_rows(out)  # failed electronic structure: these trajectories end where they were
        broke = failed is not None
        broken = failed if failed is not None else torch.zeros(len(active), dtype=torch.bool, device=self.device)
        if broke:
            out = keep_previous(out, broken, E_old, F, d_old, vectors_old)
        F_new, E_new = out.forces, out.energies
        assert F_new is not None, "the potential must return the forces of the states it is asked for"
        v_new = v_half + F_new * kick
        d_new = self._nacs_or_zeros(out, R_new)
        if out.state_vectors is None and s.sign_bisections > 0 and not curvature:  # signs from the NACs alone
            signs = track_signs(self.potential, R, d_old, R_new, d_new, active, ids, v_new, s.dt, s.sign_bisections,
                                s.sign_min_cosine)
            d_new, vectors_new = d_new * pair_signs(signs, self.n_states)[:, :, None, None], None
        else:
            d_new, vectors_new = align_signs(d_new, d_old, out.state_vectors, vectors_old, self.n_states)

        # electrons
        gaps_old = pair_gaps(E_old, self._gap_pairs) if curvature else None
        if curvature:
            before = gaps_before if gaps_before is not None else torch.full_like(gaps_old, torch.nan)
            T_new = curvature_couplings(pair_gaps(E_new, self._gap_pairs), gaps_old, before, s.dt)
        else:
            T_new = velocity_couplings(v_new, d_new)
        if s.substeps is not None:
            n_sub = torch.full((len(active),), s.substeps, dtype=torch.long, device=self.device)
        else:
            n_sub = self._kernel("substep counts", auto_substeps)(E_old, E_new, T_old, T_new, s.dt, s.max_substep_angle)
        c, probabilities = propagate_coefficients(c, active, E_old, E_new, T_old, T_new, n_sub, s.dt, self.pairs,
                                                  self._kernel("substep", self.pairs.substep))

        # hops
        zeta = self._uniforms(step_number, state.n_total or state.n_trajectories)
        if state.trajectory_ids is not None or not everything:
            zeta = zeta[ids]
        target = choose_targets(probabilities, zeta)
        if broke:
            target = torch.where(broken, -1, target)

        def target_forces(rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
            forces, failed = self._forces(R_new[rows], states, ids[rows])
            return torch.where(failed[:, None, None], torch.nan, forces)

        outcome = attempt_hops(v_new, active, target, E_new, d_new, F_new, self.masses, self.pairs.pair_index,
                               s.rescale, s.frustrated, target_forces)
        # `broken` can only change after this step's potential call where a hop needed more forces
        maybe_broken = broke or outcome.any_attempted
        if s.frustrated == "reflect_gradv":
            broken = broken | outcome.failed
        v_new, previous_active, active, F_before_hops = outcome.velocities, active, outcome.active, F_new
        velocities_changed = outcome.any_attempted  # accepted hops rescale, frustrated ones may reflect
        if velocities_changed:
            moved = torch.nonzero(active != previous_active)[:, 0]
            if len(moved):
                F_new = self._refresh_forces(F_new, moved, active[moved], R_new, ids, broken)
            where = torch.nonzero(outcome.attempted)[:, 0]
            hops = hops.extend(HopEvents(step_number, ids[where], previous_active[where], target[where],
                                         outcome.frustrated[where], torch.full_like(where, FSSH_HOP)))
        c = self.decoherence.correct(DecoherenceInput(c, active, previous_active, E_new, v_new, F_before_hops, d_new, self.masses, s.dt))
        if s.forced_hop_gap is not None:
            v_new, active_forced, c, forced = forced_hops_to_ground(v_new, active, c, E_new, self.masses, s.forced_hop_gap, ~broken)
            if len(forced):
                velocities_changed = maybe_broken = True
                F_new = self._refresh_forces(F_new, forced, active_forced[forced], R_new, ids, broken)
                hops = hops.extend(HopEvents(step_number, ids[forced], active[forced], active_forced[forced],
                                             torch.zeros_like(forced, dtype=torch.bool), torch.full_like(forced, FORCED_HOP)))
            active = active_forced
        if velocities_changed and not curvature:
            T_new = velocity_couplings(v_new, d_new)

        any_broken = maybe_broken and bool(broken.any())
        if any_broken:  # back to the last good step: nothing of this step is kept
            R_new, v_new, F_new = keep_rows(broken, R, R_new), keep_rows(broken, v, v_new), keep_rows(broken, F, F_new)
            E_new, d_new, T_new = keep_rows(broken, E_old, E_new), keep_rows(broken, d_old, d_new), keep_rows(broken, T_old, T_new)
            c, active = keep_rows(broken, take(state.coefficients), c), keep_rows(broken, take(state.active), active)
            if vectors_new is not None and vectors_old is not None:
                vectors_new = keep_rows(broken, vectors_old, vectors_new)
            hops = hops.without(ids[broken])
            if gaps_old is not None and gaps_before is not None:
                gaps_old = keep_rows(broken, gaps_before, gaps_old)
        self._store(state, run, everything, R_new, v_new, F_new, c, active, E_new, d_new, T_new, vectors_new)
        if gaps_old is not None:  # the gaps of the step before this one, for the next step's curvature
            if everything or state.previous_gaps is None:
                state.previous_gaps = gaps_old
            else:
                state.previous_gaps[run] = gaps_old
        state.step = step_number
        state.status = update_status(state.status, running, state.positions, state.velocities, self.total_energy(state),
                                     state.total_energy0, state.step, s.n_steps, s.box, s.max_energy_drift)
        if any_broken:
            state.status[run[broken & running[run]]] = ELECTRONIC_FAILURE  # only trajectories that were running
        if s.ground_state_end is not None:
            if state.ground_steps is None:  # a checkpoint written without the setting: count from here
                state.ground_steps = torch.zeros_like(state.active)
            state.ground_steps = ground_state_steps(state.ground_steps, running, state.active)
            state.status = relax(state.status, state.ground_steps, self.steps_to_relax)
        return hops

    @property
    def steps_to_relax(self) -> int:
        """Steps in S0 after which a trajectory ends as RELAXED (`settings.ground_state_end`; at least 1)."""
        assert self.settings.ground_state_end is not None
        return max(1, math.ceil(self.settings.ground_state_end / self.settings.dt - 1e-9))

    def _uniforms(self, step: int, n_total: int) -> torch.Tensor:
        """`step_uniforms` of the step on the engine's device (on a GPU through pinned memory, without waiting)."""
        zeta = torch.from_numpy(step_uniforms(self.settings.seed, step, n_total))
        if self.device.type == "cpu":
            return zeta
        return zeta.pin_memory().to(self.device, non_blocking=True)

    @staticmethod
    def _store(state: EnsembleState, run: torch.Tensor, everything: bool, R: torch.Tensor, v: torch.Tensor,
               F: torch.Tensor, c: torch.Tensor, active: torch.Tensor, E: torch.Tensor, d: torch.Tensor,
               T: torch.Tensor, vectors: torch.Tensor | None) -> None:
        """Write the stepped rows `run` back into `state`."""
        if everything:
            state.positions, state.velocities, state.forces = R, v, F
            state.coefficients, state.active, state.energies, state.nacs, state.couplings = c, active, E, d, T
            if vectors is not None and state.state_vectors is not None:
                state.state_vectors = vectors
            return
        state.positions[run], state.velocities[run], state.forces[run] = R, v, F
        state.coefficients[run], state.active[run] = c, active
        state.energies[run], state.nacs[run] = E, d
        if state.couplings is not None:
            state.couplings[run] = T
        if vectors is not None and state.state_vectors is not None:
            state.state_vectors[run] = vectors

    # ------------------------------------------------------------------ helpers
    def total_energy(self, state: EnsembleState) -> torch.Tensor:
        """(B,) potential energy of the active state plus kinetic energy, Hartree."""
        return total_energy(state.energies, state.active, state.velocities, self.masses)

    def run(
        self, state: EnsembleState, observer: StepObserver | None = None, progress: Callable[[int], None] | None = None
    ) -> EnsembleState:
        """Step until every trajectory has ended or `n_steps` is reached; call `observer` after each step. Trajectories
        that relaxed to S0 (`settings.ground_state_end`) still count in the populations: with any of them the steps go
        on to `n_steps` (without potential calls once none is running), so the records cover the whole time."""
        while state.step < self.settings.n_steps and bool(((state.status == RUNNING) | (state.status == RELAXED)).any()):
            hops = self.step(state)
            if observer is not None:
                observer(state, hops)
            if progress is not None:
                progress(state.step)
        return state
