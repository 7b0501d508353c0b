"""Batched fewest-switches surface hopping (Tully 1990) in PyTorch, float64, on CPU or GPU.

One nuclear step of every running trajectory (B of them, N states, n atoms, P pairs):

1. velocity Verlet on the active state's force, one potential call for the whole batch at the new positions
   (energies, active-state forces, NACs);
2. state signs tracked from the previous step: from the overlaps of the states' vectors when the potential gives
   them (diabatic models), otherwise the consistent sign vector p (pair ij flips by p_i p_j) that best aligns the
   NACs with the previous step's; NACs are multiplied by p_i p_j;
3. electronic coefficients propagated with H = diag(E) - i T, T_ij = v . d_ij, both interpolated linearly over
   substeps; each substep is a symmetric splitting into unitary factors (phases and plane rotations), so the norm
   is kept to round-off;
   hopping probabilities g_aj = max(0, 2 Re(c_a* c_j) T_aj dtau / |c_a|^2) are summed over the substeps;
4. one uniform random number per trajectory and step (Philox keyed by seed and step: the same seed gives the
   same numbers whatever the batch, so runs resume bit-identically) picks the hop;
5. a hop adjusts the velocity along the NAC (or the velocity) to conserve total energy; if the kinetic energy does
   not suffice the hop is frustrated: the velocity is kept, reflected, or reflected by the grad-V criterion;
6. energy-based decoherence correction (Granucci and Persico, J. Chem. Phys. 126, 134114 (2007)):
   c_k *= exp(-dt / tau_ka), tau_ka = (1 + C / E_kin) / |E_k - E_a|, active coefficient renormalised;
7. optional forced hop to S0 below a gap; termination by time, box or energy drift (marked failed, not kept).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Protocol

import numpy as np
import torch

from exsnn.data.phases import pair_signs, state_signs_from_nacs
from exsnn.data.properties import state_pairs
from exsnn.dynamics.settings import FSSHSettings
from exsnn.potentials.base import Potential, PotentialOutput

RUNNING, FINISHED, LEFT_BOX, FAILED, ELECTRONIC_FAILURE = 0, 1, 2, 3, 4
STATUS_NAMES = {RUNNING: "running", FINISHED: "finished", LEFT_BOX: "left box", FAILED: "failed (energy drift)",
                ELECTRONIC_FAILURE: "failed (electronic structure)"}
FAILED_STATUSES = (FAILED, ELECTRONIC_FAILURE)  # trajectories left out of population averages


@dataclass
class EnsembleState:
    """Everything needed to continue an ensemble (B trajectories). Tensors on the engine's device, float64."""

    step: int
    positions: torch.Tensor  # (B, n, 3) Bohr
    velocities: torch.Tensor  # (B, n, 3) Bohr / atomic time
    coefficients: torch.Tensor  # (B, N) complex128
    active: torch.Tensor  # (B,) long
    energies: torch.Tensor  # (B, N) Hartree
    forces: torch.Tensor  # (B, n, 3) active-state forces
    nacs: torch.Tensor  # (B, P, n, 3) sign-aligned NACs at the current positions
    status: torch.Tensor  # (B,) long, RUNNING / FINISHED / LEFT_BOX / FAILED / ELECTRONIC_FAILURE
    total_energy0: torch.Tensor  # (B,) Hartree
    state_vectors: torch.Tensor | None = None  # (B, K, N) sign-tracked state vectors, when the potential gives them
    couplings: torch.Tensor | None = None  # (B, P) v . d_ij at the current step (kept to avoid recomputing it)
    trajectory_ids: torch.Tensor | None = None  # (B,) ids in the original ensemble after `select` (None: 0..B-1)
    n_total: int | None = None  # size of the original ensemble (random numbers are drawn for all of it)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("step", "n_total") and getattr(self, f.name) is not None
        }

    @property
    def n_trajectories(self) -> int:
        return int(self.positions.shape[0])

    def select(self, index: torch.Tensor) -> "EnsembleState":
        """A smaller ensemble holding the trajectories at `index` (B',); they keep their ids and random numbers."""
        ids = self.trajectory_ids if self.trajectory_ids is not None else torch.arange(self.n_trajectories, device=index.device)
        picked = {name: tensor[index] for name, tensor in self.tensors().items() if name not in ("trajectory_ids", "n_total")}
        return EnsembleState(step=self.step, **picked, trajectory_ids=ids[index], n_total=self.n_total or self.n_trajectories)


@dataclass
class HopEvents:
    """Hops of one step: trajectory index, from, to, frustrated flag, kind (0 = FSSH, 1 = forced to S0)."""

    step: int
    trajectory: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    frustrated: torch.Tensor
    kind: torch.Tensor

    @staticmethod
    def empty(step: int, device: torch.device) -> "HopEvents":
        z = torch.zeros(0, dtype=torch.long, device=device)
        return HopEvents(step, z, z, z, z.bool(), z)

    def extend(self, other: "HopEvents") -> "HopEvents":
        cat = lambda a, b: torch.cat([a, b])  # noqa: E731
        return HopEvents(self.step, cat(self.trajectory, other.trajectory), cat(self.source, other.source),
                         cat(self.target, other.target), cat(self.frustrated, other.frustrated), cat(self.kind, other.kind))


class StepObserver(Protocol):
    def __call__(self, state: EnsembleState, hops: HopEvents) -> None: ...


def populations(coefficients: torch.Tensor) -> torch.Tensor:
    """|c|^2, (B, N) float64 from complex coefficients (B, N)."""
    return coefficients.real**2 + coefficients.imag**2


def kinetic_energy(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(B,) kinetic energies of velocities (B, n, 3) with masses (n,)."""
    return 0.5 * (velocities**2).flatten(1) @ masses.repeat_interleave(3)


def step_uniforms(seed: int, step: int, n_trajectories: int) -> np.ndarray:
    """The uniform random numbers of one step, one per trajectory.

    Every (seed, step) gets its own Philox key, so the streams of different steps are independent (consecutive
    counters of one key would overlap: trajectory i at step s+1 would reuse the number of trajectory i+4 at step s).
    """
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be a non-negative integer below 2**64")
    return np.random.Generator(np.random.Philox(key=(seed << 64) | step)).random(n_trajectories)


def velocity_couplings(velocities: torch.Tensor, nacs: torch.Tensor) -> torch.Tensor:
    """T_ij = v . d_ij per pair: velocities (B, n, 3), NACs (B, P, n, 3) -> (B, P)."""
    return torch.bmm(nacs.flatten(2), velocities.flatten(1)[:, :, None])[..., 0]


def state_signs_from_vectors(new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Signs (B, N) that make each state vector (B, K, N) overlap positively with the previous step's."""
    overlap = new[:, 0] * previous[:, 0]
    for k in range(1, new.shape[1]):  # K is small: explicit adds beat a strided reduction
        overlap = overlap + new[:, k] * previous[:, k]
    return torch.where(overlap < 0, -1.0, 1.0).to(new.dtype)


class FSSHEngine:
    """Propagates an ensemble on any `Potential` (see module docstring for the algorithm)."""

    def __init__(self, potential: Potential, settings: FSSHSettings) -> None:
        self.potential = potential
        self.settings = settings
        self.device = potential.device
        self.masses = potential.masses.to(self.device, torch.float64)
        self.n_states = potential.n_states
        pairs = torch.tensor(state_pairs(self.n_states), device=self.device).reshape(-1, 2)
        # row_of_pairs[a] (N, P): T_aj = sum_p row_of_pairs[a, j, p] T_p  (+1 for a < j, -1 for a > j)
        self._row_of_pairs = torch.zeros((self.n_states, self.n_states, len(pairs)), dtype=torch.float64, device=self.device)
        for p, (i, j) in enumerate(pairs.tolist()):
            self._row_of_pairs[i, j, p] = 1.0
            self._row_of_pairs[j, i, p] = -1.0
        self._pair_index = torch.full((self.n_states, self.n_states), -1, dtype=torch.long, device=self.device)
        self._pair_index[pairs[:, 0], pairs[:, 1]] = torch.arange(len(pairs), device=self.device)
        self._pair_index[pairs[:, 1], pairs[:, 0]] = torch.arange(len(pairs), device=self.device)

    # ------------------------------------------------------------------ set-up
    def initial_state(
        self,
        positions: torch.Tensor,
        velocities: torch.Tensor,
        states: torch.Tensor,
        coefficients: torch.Tensor | None = None,
    ) -> EnsembleState:
        """Start trajectories at positions/velocities (B, n, 3) on `states` (B,); coefficients default to the
        active state."""
        positions = positions.to(self.device, torch.float64)
        velocities = velocities.to(self.device, torch.float64)
        states = states.to(self.device, torch.long)
        if coefficients is None:
            coefficients = torch.nn.functional.one_hot(states, self.n_states).to(torch.complex128)
        out = self.potential.compute(positions, states=states, nacs=True)
        broken = self._broken(out)
        if bool(broken.any()):
            raise ValueError(f"the potential failed at starting structures {torch.nonzero(broken)[:, 0].tolist()}")
        total = out.energies.gather(1, states[:, None])[:, 0] + kinetic_energy(velocities, self.masses)
        vectors = None if out.state_vectors is None else out.state_vectors.to(torch.float64)
        return EnsembleState(
            step=0,
            positions=positions,
            velocities=velocities,
            coefficients=coefficients.to(self.device, torch.complex128),
            active=states,
            energies=out.energies,
            forces=out.forces,  # type: ignore[arg-type]
            nacs=self._nacs_or_zeros(out, positions),
            status=torch.zeros(len(states), dtype=torch.long, device=self.device),
            total_energy0=total,
            state_vectors=vectors,
            couplings=velocity_couplings(velocities, self._nacs_or_zeros(out, positions)),
        )

    def _nacs_or_zeros(self, out: PotentialOutput, positions: torch.Tensor) -> torch.Tensor:
        if out.nacs is not None:
            return out.nacs
        return torch.zeros((len(positions), len(state_pairs(self.n_states)), *positions.shape[1:]), dtype=torch.float64, device=self.device)

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
        if not bool(running.any()):
            state.step = step_number
            return hops
        everything = s.propagate_finished or bool(running.all())
        run = torch.arange(state.n_trajectories, device=self.device) if everything else torch.nonzero(running)[:, 0]
        take = (lambda t: t) if everything else (lambda t: t[run])  # noqa: E731
        m = self.masses[None, :, None]
        R, v, F = take(state.positions), take(state.velocities), take(state.forces)
        active, c = take(state.active), take(state.coefficients)
        E_old, d_old = take(state.energies), take(state.nacs)
        T_old = take(state.couplings) if state.couplings is not None else velocity_couplings(v, d_old)

        v_half = v + 0.5 * s.dt * F / m
        R_new = R + s.dt * v_half
        out = self.potential.compute(R_new, states=active, nacs=True)
        broken = self._broken(out)  # failed electronic structure: these trajectories end where they were
        if bool(broken.any()):
            out = self._keep_previous(out, broken, E_old, F, d_old, take(state.state_vectors) if state.state_vectors is not None else None)
        d_new = self._nacs_or_zeros(out, R_new)
        vectors_new = out.state_vectors
        if vectors_new is not None and state.state_vectors is not None:
            signs = state_signs_from_vectors(vectors_new, take(state.state_vectors))
            vectors_new = vectors_new * signs[:, None, :]
        else:
            signs = state_signs_from_nacs(d_new, d_old, self.n_states)
        d_new = d_new * pair_signs(signs, self.n_states)[:, :, None, None]
        F_new = out.forces
        assert F_new is not None
        v_new = v_half + 0.5 * s.dt * F_new / m
        E_new = out.energies

        T_new = velocity_couplings(v_new, d_new)
        c, probabilities = self._propagate_coefficients(c, active, E_old, E_new, T_old, T_new)
        zeta = torch.as_tensor(step_uniforms(s.seed, step_number, state.n_total or state.n_trajectories), device=self.device)
        if state.trajectory_ids is not None:
            zeta = zeta[state.trajectory_ids]
        target = self._choose_targets(probabilities, take(zeta))
        target = torch.where(broken, torch.full_like(target, -1), target)
        v_new, active_new, frustrated_flag, attempted = self._attempt_hops(R_new, v_new, active, target, E_new, d_new, F_new)
        if attempted.any():
            hopped = active_new != active
            if hopped.any():
                moved = torch.nonzero(hopped)[:, 0]
                refreshed = self.potential.compute(R_new[moved], states=active_new[moved], nacs=False)
                F_new = F_new.clone()
                F_new[moved] = refreshed.forces  # type: ignore[assignment]
            where = torch.nonzero(attempted)[:, 0]
            hops = hops.extend(HopEvents(step_number, run[where], active[where], target[where], frustrated_flag[where],
                                         torch.zeros_like(where)))
        velocities_changed = bool(attempted.any())  # accepted hops rescale, frustrated ones may reflect
        previous_active = active
        active = active_new
        if s.decoherence == "edc":
            c = self._decohere(c, active, E_new, kinetic_energy(v_new, self.masses))
        if s.forced_hop_gap is not None:
            v_new, active, c, F_new, forced = self._forced_hop_to_ground(R_new, v_new, active, c, E_new, F_new, ~broken)
            velocities_changed = velocities_changed or len(forced) > 0
            if len(forced):
                hops = hops.extend(HopEvents(step_number, run[forced], previous_active[forced], torch.zeros_like(forced),
                                             torch.zeros_like(forced, dtype=torch.bool), torch.ones_like(forced)))

        if velocities_changed:
            T_new = velocity_couplings(v_new, d_new)
        if bool(broken.any()):  # back to the last good step: positions, velocities and amplitudes stay as they were
            keep = broken[:, None, None]
            R_new, v_new = torch.where(keep, R, R_new), torch.where(keep, v, v_new)
            c, active = torch.where(broken[:, None], take(state.coefficients), c), torch.where(broken, previous_active, active)
            T_new = torch.where(broken[:, None], T_old, T_new)
        if everything:
            state.couplings = T_new
            state.positions, state.velocities, state.forces = R_new, v_new, F_new
            state.coefficients, state.active, state.energies, state.nacs = c, active, E_new, d_new
            if vectors_new is not None and state.state_vectors is not None:
                state.state_vectors = vectors_new
        else:
            state.positions[run], state.velocities[run], state.forces[run] = R_new, v_new, F_new
            state.coefficients[run], state.active[run] = c, active
            state.energies[run], state.nacs[run] = E_new, d_new
            if state.couplings is not None:
                state.couplings[run] = T_new
            if vectors_new is not None and state.state_vectors is not None:
                state.state_vectors[run] = vectors_new
        state.step = step_number
        self._terminate(state, running)
        if bool(broken.any()):
            state.status[run[broken]] = ELECTRONIC_FAILURE
        return hops

    @staticmethod
    def _broken(out: PotentialOutput) -> torch.Tensor:
        """(B,) True where the potential gave non-finite energies, forces or NACs (a failed calculation)."""
        bad = ~torch.isfinite(out.energies).all(dim=1)
        for tensor in (out.forces, out.nacs):
            if tensor is not None:
                bad = bad | ~torch.isfinite(tensor).flatten(1).all(dim=1)
        return bad

    @staticmethod
    def _keep_previous(out: PotentialOutput, broken: torch.Tensor, E: torch.Tensor, F: torch.Tensor, d: torch.Tensor,
                       vectors: torch.Tensor | None) -> PotentialOutput:
        """`out` with the rows of failed structures replaced by the previous step's values (nothing moves there)."""
        def pick(new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
            if new is None or old is None:
                return new
            return torch.where(broken.view(-1, *([1] * (new.dim() - 1))), old, new)

        return PotentialOutput(energies=pick(out.energies, E), forces=pick(out.forces, F), nacs=pick(out.nacs, d),
                               state_vectors=pick(out.state_vectors, vectors))  # type: ignore[arg-type]

    def _propagate_coefficients(
        self, c: torch.Tensor, active: torch.Tensor, E_old: torch.Tensor, E_new: torch.Tensor, T_old: torch.Tensor, T_new: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate c (B, N) over one step; return it and the summed hopping probabilities (B, N).

        Each substep is a symmetric (Strang) splitting of exp(-i H dtau), H = diag(E) - i T: half a step of
        phases exp(-i E dtau / 2), the couplings as a symmetric sequence of plane rotations (exp(-T dtau) is a real
        rotation because T is antisymmetric), half a step of phases. Every factor is unitary, so the norm is kept to
        round-off; the error per step is O(dtau^3).
        """
        s, N = self.settings, self.n_states
        n_sub = s.substeps or self._auto_substeps(E_old, E_new, T_old, T_new)
        dtau = s.dt / n_sub
        rows = torch.arange(len(active), device=self.device)
        shift = E_old.gather(1, active[:, None])  # a global phase only
        E0, dE = E_old - shift, E_new - E_old
        dT = T_new - T_old
        rows_of_active = self._row_of_pairs[active]  # (B, N, P)
        T_active_old = torch.bmm(rows_of_active, T_old[:, :, None])[..., 0]  # (B, N): T_aj
        T_active_delta = torch.bmm(rows_of_active, dT[:, :, None])[..., 0]
        pairs = state_pairs(N)
        sweep = list(range(len(pairs))) + list(range(len(pairs) - 1, -1, -1))  # symmetric sequence of rotations
        probabilities: torch.Tensor | float = 0.0
        c = c.clone()
        for k in range(n_sub):
            f = (k + 0.5) / n_sub
            phase = (E0 + f * dE) * (-0.5 * dtau)
            half_phase = torch.complex(torch.cos(phase), torch.sin(phase))
            c = c * half_phase
            angles = (T_old + f * dT) * (dtau / (1 if len(pairs) == 1 else 2))
            cos, sin = torch.cos(angles), torch.sin(angles)
            for p in sweep if len(pairs) > 1 else [0]:
                i, j = pairs[p]
                ci, cj = c[:, i], c[:, j]
                c[:, i], c[:, j] = cos[:, p] * ci - sin[:, p] * cj, sin[:, p] * ci + cos[:, p] * cj
            c = c * half_phase
            c_active = c[rows, active]
            a_re, a_im = c_active.real[:, None], c_active.imag[:, None]
            overlap = a_re * c.real + a_im * c.imag  # Re(c_a* c_j)
            flux = overlap * (T_active_old + f * T_active_delta) * (2.0 * dtau)
            probabilities = probabilities + (flux / (a_re**2 + a_im**2).clamp_min(1e-300)).clamp_min(0.0)
        assert isinstance(probabilities, torch.Tensor)
        return c, probabilities  # the active state's own entry is zero: T_aa = 0

    def _auto_substeps(self, E_old: torch.Tensor, E_new: torch.Tensor, T_old: torch.Tensor, T_new: torch.Tensor) -> int:
        """Fewest substeps keeping the coupling rotation T dtau and the splitting error scale sqrt(dE T) dtau
        of every trajectory below `max_substep_angle` (phases alone are integrated exactly)."""
        spread = torch.maximum(E_old.amax(1) - E_old.amin(1), E_new.amax(1) - E_new.amin(1))  # (B,)
        coupling = torch.maximum(T_old.abs().amax(1), T_new.abs().amax(1))  # (B,)
        rate = torch.maximum(coupling, torch.sqrt(spread * coupling)).max()
        return max(1, min(10_000, int(torch.ceil(rate * self.settings.dt / self.settings.max_substep_angle).item())))

    @staticmethod
    def _choose_targets(probabilities: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        """Target state per trajectory (-1 for none): the first j with cumulative probability above zeta."""
        cumulative = torch.cumsum(probabilities, dim=1)
        above = cumulative > zeta[:, None]
        has = above.any(dim=1)
        first = torch.argmax(above.to(torch.int8), dim=1)
        return torch.where(has, first, torch.full_like(first, -1))

    def _direction(self, v: torch.Tensor, d: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Rescaling direction u (K, n, 3) for hops source -> target: the NAC d_st or the momentum m v."""
        if self.settings.rescale == "velocity":
            return v * self.masses[None, :, None]
        return d[torch.arange(len(source), device=self.device), self._pair_index[source, target]]

    def _attempt_hops(
        self, R: torch.Tensor, v: torch.Tensor, active: torch.Tensor, target: torch.Tensor,
        E: torch.Tensor, d: torch.Tensor, F_active: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply hops; return (velocities, new active states, frustrated flags, attempted flags)."""
        attempted = target >= 0
        frustrated = torch.zeros_like(attempted)
        new_active = active.clone()
        if not attempted.any():
            return v, new_active, frustrated, attempted
        idx = torch.nonzero(attempted)[:, 0]
        src, dst = active[idx], target[idx]
        u = self._direction(v[idx], d[idx], src, dst)
        m = self.masses[None, :, None]
        a = 0.5 * (u**2 / m).sum((1, 2))
        b = (v[idx] * u).sum((1, 2))
        available = E[idx, src] - E[idx, dst]
        discriminant = b**2 + 4 * a * available
        ok = (discriminant >= 0) & (a > 0)
        root = torch.sqrt(discriminant.clamp_min(0.0))
        gamma = torch.where(b >= 0, (b - root) / (2 * a.clamp_min(1e-300)), (b + root) / (2 * a.clamp_min(1e-300)))
        v = v.clone()
        v[idx[ok]] = v[idx[ok]] - gamma[ok, None, None] * u[ok] / m
        new_active[idx[ok]] = dst[ok]
        frustrated[idx[~ok]] = True
        bad = ~ok
        if bad.any() and self.settings.frustrated != "keep":
            reflect = bad & (a > 0)
            if self.settings.frustrated == "reflect_gradv" and reflect.any():
                which = torch.nonzero(reflect)[:, 0]
                target_forces = self.potential.compute(R[idx[which]], states=dst[which], nacs=False).forces
                assert target_forces is not None
                f_active_u = (F_active[idx[which]] * u[which]).sum((1, 2))
                f_target_u = (target_forces * u[which]).sum((1, 2))
                criterion = (f_active_u * f_target_u < 0) & (f_target_u * b[which] < 0)
                reflect[which] = criterion
            sel = torch.nonzero(reflect)[:, 0]
            v[idx[sel]] = v[idx[sel]] - (b[sel] / a[sel])[:, None, None] * u[sel] / m
        return v, new_active, frustrated, attempted

    def _decohere(self, c: torch.Tensor, active: torch.Tensor, E: torch.Tensor, kinetic: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(active), device=self.device)
        gaps = (E - E[rows, active][:, None]).abs()
        tau = (1.0 + self.settings.edc_c / kinetic.clamp_min(1e-12))[:, None] / gaps.clamp_min(1e-300)
        damping = torch.exp(-self.settings.dt / tau)
        damping[rows, active] = 1.0
        c = c * damping
        pops = populations(c)
        others = pops.sum(1) - pops[rows, active]
        c_active = c[rows, active]
        magnitude = c_active.abs()
        unit = torch.where(magnitude > 0, c_active / magnitude.clamp_min(1e-300), torch.ones_like(c_active))
        c[rows, active] = unit * torch.sqrt((1.0 - others).clamp_min(0.0))
        return c

    def _forced_hop_to_ground(
        self, R: torch.Tensor, v: torch.Tensor, active: torch.Tensor, c: torch.Tensor, E: torch.Tensor, F: torch.Tensor,
        allowed: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.arange(len(active), device=self.device)
        gap = E[rows, active] - E[:, 0]
        forced = torch.nonzero(allowed & (active > 0) & (gap < self.settings.forced_hop_gap))[:, 0]
        if len(forced) == 0:
            return v, active, c, F, forced
        kinetic = kinetic_energy(v[forced], self.masses)
        scale = torch.sqrt((kinetic + gap[forced]) / kinetic.clamp_min(1e-300))
        v, active, c, F = v.clone(), active.clone(), c.clone(), F.clone()
        v[forced] = v[forced] * scale[:, None, None]
        active[forced] = 0
        c[forced] = 0
        c[forced, 0] = 1
        F[forced] = self.potential.compute(R[forced], states=active[forced], nacs=False).forces  # type: ignore[assignment]
        return v, active, c, F, forced

    def _terminate(self, state: EnsembleState, running: torch.Tensor) -> None:
        """Update the status of trajectories that were running at the start of this step."""
        s = self.settings
        status = state.status
        drift = (self.total_energy(state) - state.total_energy0).abs() > s.max_energy_drift
        ended = torch.full_like(status, RUNNING)
        if s.box is not None:
            R, v = state.positions, state.velocities
            outside = ((R.abs() > s.box) & (R * v > 0)).flatten(1).any(dim=1)  # beyond the box and moving away
            ended = torch.where(outside, LEFT_BOX, ended)
        ended = torch.where(drift, FAILED, ended)
        if state.step >= s.n_steps:
            ended = torch.where(ended == RUNNING, FINISHED, ended)
        state.status = torch.where(running, ended, status)

    # ------------------------------------------------------------------ helpers
    def total_energy(self, state: EnsembleState) -> torch.Tensor:
        """(B,) potential energy of the active state plus kinetic energy."""
        return state.energies.gather(1, state.active[:, None])[:, 0] + kinetic_energy(state.velocities, self.masses)

    def run(self, state: EnsembleState, observer: StepObserver | None = None, progress: Callable[[int], None] | None = None) -> EnsembleState:
        """Step until every trajectory has ended or `n_steps` is reached; call `observer` after each step."""
        while state.step < self.settings.n_steps and bool((state.status == RUNNING).any()):
            hops = self.step(state)
            if observer is not None:
                observer(state, hops)
            if progress is not None:
                progress(state.step)
        return state
