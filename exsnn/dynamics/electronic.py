"""Electronic propagation of surface hopping: couplings, state-sign tracking, substeps, coefficients, hopping
probabilities and the per-step random numbers.

Over one nuclear step the coefficients c (B, N) obey i dc/dt = H c with H = diag(E) - i T, T_ij = v . d_ij, both
interpolated linearly between the step's ends (Tully, J. Chem. Phys. 93, 1061 (1990)). Each trajectory takes its
own number of substeps n (chosen from its own energies and couplings, `auto_substeps`) of length dtau = dt / n; each
substep is a symmetric (Strang) splitting into unitary factors: half a step of phases exp(-i E dtau / 2), the
couplings as a symmetric sequence of plane rotations (exp(-T dtau) is a real rotation because T is antisymmetric),
half a step of phases. The norm is kept to round-off and the error per substep is O(dtau^3). The fewest-switches
probabilities g_aj = max(0, 2 Re(c_a* c_j) T_aj dtau / |c_a|^2) are summed over the substeps.

Two states take an exact substep instead (`two_state_substep`): exp(-i (H - mean energy) dtau) of the substep's
mid-point H in closed form (H - mean energy = delta sigma_z + T sigma_y, whose square is (delta^2 + T^2) times the
identity) with the fourth-order Magnus commutator term, and the hopping probability as the population the active state
lost over the substep divided by its population at the start (for two states that loss is exactly the fewest-switches
flux into the other state). Their coefficients leave out the global phase of the mean energy (nothing observable
depends on it; N states leave out that of the active state's energy). `auto_substeps` sizes their substeps by the
error of the fourth-order exponential and by the coupling rotation.

Batch independence: the arithmetic is elementwise per trajectory in real float64 (complex products are written
out, rotations act on real and imaginary parts; torch's vectorised and scalar complex products round differently),
with row reductions only and no matrix products. Trajectories that need fewer substeps than the batch's largest
stop earlier: the substeps that all take run on the whole batch, the rest on the trajectories that need them,
sorted by substep count so that those still integrating are a shrinking prefix. So a trajectory's coefficients and
probabilities are the same bits whether it runs alone or beside strongly coupled neighbours, given the same
energies and couplings (on the CPU and on CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from exsnn.data.phases import pair_signs, state_signs_from_nacs
from exsnn.data.properties import state_pairs
from exsnn.dynamics.settings import MAX_AUTO_SUBSTEPS
from exsnn.dynamics.state import row_max, row_min, row_sum
from exsnn.errors import ConfigurationError


class PairTable:
    """Index tables of the N(N-1)/2 state pairs i<j (exsnn order 01, 02, ..., 12, ...) on a device."""

    def __init__(self, n_states: int, device: torch.device | str = "cpu") -> None:
        self.n_states = n_states
        self.pairs: list[tuple[int, int]] = [tuple(p) for p in state_pairs(n_states)]  # type: ignore[misc]
        P = len(self.pairs)
        index = torch.zeros((n_states, n_states), dtype=torch.long)
        sign = torch.zeros((n_states, n_states), dtype=torch.float64)
        pair_index = torch.full((n_states, n_states), -1, dtype=torch.long)
        for p, (i, j) in enumerate(self.pairs):
            index[i, j] = index[j, i] = p
            sign[i, j], sign[j, i] = 1.0, -1.0
            pair_index[i, j] = pair_index[j, i] = p
        #: (N, N) pair of states i, j (-1 on the diagonal)
        self.pair_index = pair_index.to(device)
        # T_aj = row_sign[a, j] * T[row_index[a, j]] (T antisymmetric: +1 for a < j, -1 for a > j, 0 for a = j)
        self._row_index = index.to(device) if P else index.clamp_max(0).to(device)
        self._row_sign = sign.to(device)
        #: order of the plane rotations of one substep: each pair with half the angle, forward then backward
        self.sweep: list[int] = list(range(P)) + list(range(P - 1, -1, -1)) if P > 1 else list(range(P))
        self.rotation_fraction = 0.5 if P > 1 else 1.0
        #: the arithmetic of one substep for these states (eager; `fusion.Fused` compiles it): exact for two states
        self.substep: SubstepFunction = two_state_substep if n_states == 2 else substep_function(
            n_states, [(p, *self.pairs[p]) for p in self.sweep], self.rotation_fraction)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def active_rows(self, pair_values: tuple[torch.Tensor, ...], active: torch.Tensor) -> list[torch.Tensor]:
        """Row a of the antisymmetric matrices with pair values (B, P) each: (B, N) with entries T_aj (T_aa = 0)."""
        if self.n_pairs == 0:
            return [torch.zeros((len(active), self.n_states), dtype=t.dtype, device=t.device) for t in pair_values]
        sign = self._row_sign.index_select(0, active)
        if self.n_pairs == 1:  # two states: every entry of the row is +-T of the one pair (0 on the diagonal)
            return [t * sign for t in pair_values]
        index = self._row_index.index_select(0, active)
        return [t.gather(1, index) * sign for t in pair_values]


#: (X, probabilities, inputs, active, inverse_n, k, dt) -> (X, probabilities); see `substep_function`
SubstepFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def substep_function(n_states: int, rotations: list[tuple[int, int, int]], rotation_fraction: float) -> SubstepFunction:
    """The arithmetic of one substep of m trajectories with N = n_states, for the plane rotations (pair p, states i,
    j) of one sweep, in order, each by `rotation_fraction` of its pair's angle.

    Arguments (state-major, each contiguous and no view of another, so that a compiled version keeps one guard
    set): X (2, N, m) real and imaginary parts of the coefficients, probabilities (N, m) summed so far, inputs (rows,
    m) as laid out by `propagate_coefficients` (energies relative to the active state's at the step's start, their
    change, couplings T (P), their change, the active state's row of both (not for two states)), active (m,) long,
    inverse_n (m,) 1 / substeps, k the substep's number, dt the nuclear step. Returns the coefficients after substep k and the
    probabilities with its hopping probabilities added."""

    N, P = n_states, n_states * (n_states - 1) // 2
    rows = [N, N, P, P, N, N]  # E0, dE, T0, dT, Ta0, dTa in the inputs block

    def substep(X: torch.Tensor, probabilities: torch.Tensor, inputs: torch.Tensor, active: torch.Tensor,
                inverse_n: torch.Tensor, k: int, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
        m = X.shape[2]
        E0, dE, T0, dT, Ta0, dTa = inputs.split(rows, dim=0)
        dtau = inverse_n * dt
        f = inverse_n * (k + 0.5)  # (m,) midpoint of the substep as a fraction of the step
        phase = (E0 + f * dE) * (-0.5 * dtau)
        cos_phase, sin_phase = torch.cos(phase), torch.sin(phase)
        X = _times_phase(X, cos_phase, sin_phase)
        angles = (T0 + f * dT) * (dtau * rotation_fraction)
        cos, sin = torch.cos(angles).unbind(0), torch.sin(angles).unbind(0)
        x = list(X.unbind(1))  # (2, m) per state: real and imaginary part
        for p, i, j in rotations:
            xi, xj = x[i], x[j]
            x[i], x[j] = cos[p] * xi - sin[p] * xj, sin[p] * xi + cos[p] * xj
        X = _times_phase(torch.stack(x, dim=1), cos_phase, sin_phase)
        x_active = X.gather(1, active[None, None, :].expand(2, 1, m))  # (2, 1, m)
        a_re, a_im = x_active[0, 0], x_active[1, 0]
        overlap = X[0] * a_re + X[1] * a_im  # Re(c_a* c_j), (N, m)
        flux = overlap * (Ta0 + f * dTa) * (2.0 * dtau)
        step_probabilities = (flux / (a_re * a_re + a_im * a_im).clamp_min(1e-300)).clamp_min(0.0)
        return X, probabilities + step_probabilities

    return substep


def two_state_substep(X: torch.Tensor, probabilities: torch.Tensor, inputs: torch.Tensor, active: torch.Tensor,
                      inverse_n: torch.Tensor, k: int, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One exact substep of m two-state trajectories: c <- exp(-i (H - mean energy) dtau) c with H = diag(E) - i T at
    the substep's mid-point, in closed form, plus the fourth-order Magnus commutator term. X (2, 2, m) real and
    imaginary parts of the coefficients, probabilities (1, m) the active state's relative population losses summed so
    far, inputs (6, m) as `two_state_inputs` lays them out, active (m,), inverse_n (m,) 1 / substeps, k the substep's
    number, dt the nuclear step. The loss of the substep is max(0, |c_a|^2 before - after) / |c_a|^2 before: for two
    states exactly the fewest-switches flux into the other state. Written as one pass per multiply-add (addcmul),
    which keeps the arithmetic elementwise and the same bits at any batch position."""
    delta0, d_delta, T0, dT, twist_rate, sign = inputs.unbind(0)
    dtau = inverse_n * dt
    f = inverse_n * (k + 0.5)  # (m,) mid-point of the substep as a fraction of the step
    delta = torch.addcmul(delta0, d_delta, f)
    T = torch.addcmul(T0, dT, f)
    twist = twist_rate * (dtau * dtau)  # the commutator term: sigma_x with dtau^2 / 6 (delta T' - T delta')
    omega_tau = torch.addcmul(torch.addcmul(delta * delta, T, T), twist, twist).sqrt_().mul_(dtau)
    cos = torch.cos(omega_tau)
    sin_over_omega = torch.sinc(omega_tau.mul_(1 / math.pi)).mul_(dtau)  # sin(omega dtau) / omega (dtau at omega 0)
    ds, ts, xs = delta.mul_(sin_over_omega), T.mul_(sin_over_omega), twist.mul_(sin_over_omega)
    a0, a1 = X[0].unbind(0)  # real parts of c_0, c_1
    b0, b1 = X[1].unbind(0)  # imaginary parts
    # c_0 <- (cos - i ds) c_0 - (ts + i xs) c_1 and c_1 <- (ts - i xs) c_0 + (cos + i ds) c_1
    new = torch.empty_like(X)
    re0, re1, im0, im1 = new[0, 0], new[0, 1], new[1, 0], new[1, 1]
    torch.mul(cos, a0, out=re0).addcmul_(ds, b0).addcmul_(ts, a1, value=-1.0).addcmul_(xs, b1)
    torch.mul(cos, b0, out=im0).addcmul_(ds, a0, value=-1.0).addcmul_(ts, b1, value=-1.0).addcmul_(xs, a1, value=-1.0)
    torch.mul(cos, a1, out=re1).addcmul_(ts, a0).addcmul_(ds, b1, value=-1.0).addcmul_(xs, b0)
    torch.mul(cos, b1, out=im1).addcmul_(ts, b0).addcmul_(ds, a1).addcmul_(xs, a0, value=-1.0)
    # what state 0 gained is what state 1 lost (the step is unitary); sign = +1 on state 1, -1 on state 0
    before0 = torch.addcmul(a0 * a0, b0, b0)
    gained0 = torch.addcmul(re0 * re0, im0, im0).sub_(before0)
    before = torch.where(active == 1, torch.addcmul(a1 * a1, b1, b1), before0)
    lost = gained0.mul_(sign).clamp_min_(0.0).div_(before.clamp_min_(1e-300))
    return new, probabilities + lost


def two_state_inputs(E_old: torch.Tensor, E_new: torch.Tensor, T_old: torch.Tensor, T_new: torch.Tensor,
                     active: torch.Tensor, dt: float) -> torch.Tensor:
    """The rows (6, B) that `two_state_substep` reads, from energies (B, 2) and couplings (B, 1) at the step's ends and
    the active states (B,): delta = (E_0 - E_1) / 2 at the start and its change, T at the start and its change, the
    rate of the Magnus commutator term (delta_0 dT - T_0 d_delta) / (6 dt) (constant along a step over which delta
    and T change linearly; times dtau^2 it is the substep's sigma_x term), and +1 / -1 for trajectories on state 1 /
    state 0."""
    gap_old = E_old[:, 0] - E_old[:, 1]
    delta0 = gap_old * 0.5
    d_delta = (E_new[:, 0] - E_new[:, 1]).sub_(gap_old).mul_(0.5)
    T0 = T_old[:, 0]
    dT = T_new[:, 0] - T0
    twist_rate = (delta0 * dT).sub_(T0 * d_delta).mul_(1.0 / (6.0 * dt))
    sign = (active == 1).to(torch.float64).mul_(2.0).sub_(1.0)
    return torch.stack([delta0, d_delta, T0, dT, twist_rate, sign])


def velocity_couplings(velocities: torch.Tensor, nacs: torch.Tensor) -> torch.Tensor:
    """T_ij = v . d_ij per pair: velocities (B, n, 3), NACs (B, P, n, 3) -> (B, P) (1 / atomic time)."""
    return row_sum((nacs * velocities[:, None]).flatten(2))


def state_signs_from_vectors(new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Signs (B, N) that make each state vector (B, K, N) overlap positively with the previous step's."""
    overlap = new[:, 0] * previous[:, 0]
    for k in range(1, new.shape[1]):  # K is small: explicit adds beat a strided reduction
        overlap = overlap + new[:, k] * previous[:, k]
    return torch.where(overlap < 0, -1.0, 1.0).to(new.dtype)


def align_signs(
    nacs: torch.Tensor, previous_nacs: torch.Tensor, vectors: torch.Tensor | None, previous_vectors: torch.Tensor | None,
    n_states: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fix the arbitrary signs of the new states to follow the previous step: from the overlaps of the state vectors
    (B, K, N) when both steps have them, otherwise the consistent sign vector that best aligns the NACs (B, P, n, 3)
    with the previous ones. Returns the sign-aligned NACs and state vectors."""
    if vectors is not None and previous_vectors is not None:
        signs = state_signs_from_vectors(vectors, previous_vectors)
    else:
        signs = state_signs_from_nacs(nacs, previous_nacs, n_states)
    # the usual case along a smooth trajectory: nothing to flip (checked on the CPU only: on a GPU the check would
    # wait for the device, and multiplying by +-1 gives the same numbers)
    if signs.device.type == "cpu" and not bool((signs < 0).any()):
        return nacs, vectors
    if vectors is not None and previous_vectors is not None:
        vectors = vectors * signs[:, None, :]
    return nacs * pair_signs(signs, n_states)[:, :, None, None], vectors


def step_uniforms(seed: int, step: int, n_trajectories: int) -> np.ndarray:
    """The uniform random numbers of one step, one per trajectory of the original ensemble (index = trajectory id).

    Every (seed, step) gets its own Philox key, so the streams of different steps are independent (consecutive
    counters of one key would overlap: trajectory i at step s+1 would reuse the number of trajectory i+4 at step s).
    A trajectory's number depends only on (seed, step, id): not on the batch it runs in, nor on a resume.
    """
    if not 0 <= seed < 2**64:
        raise ConfigurationError(f"must be an integer in [0, 2**64), got {seed}", where="seed")
    return np.random.Generator(np.random.Philox(key=(seed << 64) | step)).random(n_trajectories)


def auto_substeps(
    E_old: torch.Tensor, E_new: torch.Tensor, T_old: torch.Tensor, T_new: torch.Tensor, dt: float, max_angle: float,
) -> torch.Tensor:
    """(B,) long: each trajectory's fewest substeps keeping its coupling rotation |T| dtau and its splitting-error
    scale sqrt(dE |T|) dtau below `max_angle` (phases alone are integrated exactly), between 1 and
    MAX_AUTO_SUBSTEPS. Energies (B, N) Hartree, couplings (B, P) at both ends of the step of length dt.

    Two states (`two_state_substep`, exact for constant H and fourth order for H linear in time): the estimate of
    what its n substeps leave, s / n^2 max((omega dt / n)^2, s / n^2) / 8 with s = dt^2 |c| / 6 the size of the
    commutator term it includes (c = d_delta T - dT delta, constant along a linear step; delta = (E_0 - E_1) / 2, d_
    its change over the step) and omega the larger of sqrt(delta^2 + T^2) at the two ends, is kept below
    max_angle^3 (the estimate's constant is fitted to the error of single substeps; the checks are in the tests), and
    the coupling rotation |T| dtau below 2 max_angle, which resolves the hopping probabilities: on Tully 1 (k = 20,
    dt = 20 a.u., 20,000 trajectories) the transmitted lower-state share is 0.512 without that limit, 0.493 with it,
    0.488 at max_angle, 0.490 with the split-operator substeps used before, and 0.498 +- 0.003 converged (dt = 2)
    (`benchmarks/bench_fssh_numpy.py`)."""
    if T_old.shape[1] == 0:
        return torch.ones(len(E_old), dtype=torch.long, device=E_old.device)
    if T_old.shape[1] == 1:
        delta, delta_new = E_old[:, 0] - E_old[:, 1], E_new[:, 0] - E_new[:, 1]  # 2 delta at both ends
        T, T_end = T_old[:, 0], T_new[:, 0]
        # the O(dtau^3) term of the step (of a substep: / n^2), s = dt^2 |d_delta T - dT delta| / 6
        second = ((delta_new - delta) * T - (T_end - T) * delta).abs_().mul_(dt * dt / 12.0)
        # (omega dt)^2 at the larger end
        omega_dt2 = torch.maximum(delta * delta * 0.25 + T * T, delta_new * delta_new * 0.25 + T_end * T_end).mul_(dt * dt)
        # what the fourth-order substeps leave: about s / n^2 times max((omega dtau)^2, s / n^2) / 8
        scale = torch.maximum(omega_dt2, second).mul_(second).mul_(1.0 / (8.0 * max_angle**3))
        # and the coupling rotation |T| dtau of a substep below 2 max_angle, so that the flux into the other state
        # keeps its sign within a substep and the summed population losses are the fewest-switches probability
        resolved = torch.maximum(T.abs(), T_end.abs()).mul_(dt / (2.0 * max_angle))
        return torch.ceil(torch.maximum(scale.sqrt_().sqrt_(), resolved)).clamp_(1, MAX_AUTO_SUBSTEPS).to(torch.long)
    spread = torch.maximum(row_max(E_old) - row_min(E_old), row_max(E_new) - row_min(E_new))  # (B,)
    coupling = torch.maximum(row_max(T_old.abs()), row_max(T_new.abs()))  # (B,)
    rate = torch.maximum(coupling, torch.sqrt(spread * coupling))
    return torch.ceil(rate * dt / max_angle).clamp(1, MAX_AUTO_SUBSTEPS).to(torch.long)


def _times_phase(X: torch.Tensor, cos_phase: torch.Tensor, sin_phase: torch.Tensor) -> torch.Tensor:
    """c * exp(i phase) for c as real and imaginary parts X (2, N, m), with cos and sin of the phases (N, m)."""
    re, im = X[0], X[1]
    out = torch.empty_like(X)
    out_re, out_im = out[0], out[1]
    torch.mul(re, cos_phase, out=out_re).sub_(im * sin_phase)  # re cos - im sin
    torch.mul(re, sin_phase, out=out_im).add_(im * cos_phase)  # re sin + im cos
    return out


def propagate_coefficients(
    coefficients: torch.Tensor,
    active: torch.Tensor,
    E_old: torch.Tensor,
    E_new: torch.Tensor,
    T_old: torch.Tensor,
    T_new: torch.Tensor,
    n_substeps: torch.Tensor,
    dt: float,
    table: PairTable,
    substep: SubstepFunction | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate coefficients (B, N) complex128 over one nuclear step of length dt.

    active (B,) the active states, E_old/E_new (B, N) energies, T_old/T_new (B, P) couplings v . d at the step's
    ends, n_substeps (B,) long each trajectory's substeps, substep the arithmetic of one substep (default
    `table.substep`; the engine may pass a fused one). Returns the new coefficients (B, N) and the summed
    hopping probabilities (B, N) out of the active state (zero for the active state itself).

    The substeps every trajectory takes run on the whole batch; the trajectories that take more continue as a
    subset sorted by substep count, which shrinks to a prefix as they finish.
    """
    B, N = coefficients.shape
    if B == 0:
        return coefficients, torch.zeros((0, N), dtype=torch.float64, device=coefficients.device)
    # state-major layout (rows, B): real parts, imaginary parts; then E - E_a (a global phase), dE (N rows each), T,
    # dT (P each), and the active state's row of T and of dT (N each); two states: `two_state_inputs`
    coefficients = coefficients.resolve_conj()
    X = torch.cat([coefficients.real.T, coefficients.imag.T], dim=0).view(2, N, B)  # neither part a view of the other
    if N == 2:
        inputs = two_state_inputs(E_old, E_new, T_old, T_new, active, dt)
    else:
        dT = T_new - T_old
        parts = (E_old - E_old.gather(1, active[:, None]), E_new - E_old, T_old, dT, *table.active_rows((T_old, dT), active))
        inputs = torch.cat([part.T for part in parts], dim=0)
    n_rows = 1 if N == 2 else N  # probabilities summed over the substeps: two states, the active state's loss only
    inverse_n = n_substeps.to(torch.float64).reciprocal()
    counts = torch.bincount(n_substeps).cpu().numpy()  # how many take k substeps: all the host needs, in one transfer
    taken = np.nonzero(counts)[0]
    n_min, n_max = int(taken[0]), int(taken[-1])
    substep = substep or table.substep
    X, probabilities = _substeps(X, None, inputs, active, inverse_n, dt, n_rows, range(n_min), [B] * n_min, substep)
    if n_max > n_min:  # the others go on, longest first, so that those still integrating are a prefix
        at_least = np.cumsum(counts[::-1])[::-1]  # [k]: trajectories with k or more substeps
        still = at_least[n_min + 1:].tolist()  # trajectories with more than k substeps, k = n_min .. n_max - 1
        if n_substeps.device.type == "cpu":
            rows = torch.nonzero(n_substeps > n_min)[:, 0]
            rows = rows[torch.argsort(n_substeps[rows], descending=True, stable=True)]
        else:  # the same rows in the same order, without asking the device how many there are
            rows = torch.argsort(n_substeps, descending=True, stable=True)[: still[0]]
        more_X, more_probabilities = _substeps(_columns(X, rows), _columns(probabilities, rows), _columns(inputs, rows),
                                               active[rows], inverse_n[rows], dt, n_rows, range(n_min, n_max), still,
                                               substep)
        X, probabilities = _put_columns(X, rows, more_X), _put_columns(probabilities, rows, more_probabilities)
    out = torch.empty((B, N), dtype=torch.complex128, device=X.device)  # (B, N) from the state-major (2, N, B)
    parts = torch.view_as_real(out)
    parts[..., 0].copy_(X[0].T)
    parts[..., 1].copy_(X[1].T)
    if N == 2:  # the loss goes into the other state
        return out, torch.zeros((B, 2), dtype=torch.float64, device=X.device).scatter_(1, (1 - active)[:, None], probabilities.T)
    return out, probabilities.T


def _columns(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """values[..., rows] of a state-major tensor (..., B) (a gather: much faster than index_select on the last axis)."""
    flat = values.reshape(-1, values.shape[-1])
    return flat.gather(1, rows[None].expand(len(flat), -1)).view(*values.shape[:-1], len(rows))


def _put_columns(values: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """A copy of `values` (..., B) with columns[..., k] at values[..., rows[k]]."""
    flat = values.reshape(-1, values.shape[-1])
    return flat.scatter(1, rows[None].expand(len(flat), -1), columns.reshape(len(flat), -1)).view(values.shape)


def _substeps(
    X: torch.Tensor, probabilities: torch.Tensor | None, inputs: torch.Tensor, active: torch.Tensor,
    inverse_n: torch.Tensor, dt: float, n_rows: int, substeps: range, still: list[int], substep: SubstepFunction,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Substeps `substeps` of m trajectories: X (2, N, m) real and imaginary parts of the coefficients, probabilities
    (n_rows, m) summed so far (None: none yet), inputs (rows, m) as laid out by `propagate_coefficients`, active (m,),
    1 / n_substeps (m,); the first still[i] trajectories take substep substeps[i], each through `substep` (the
    table's `substep_function`, eager or fused). Returns the coefficients and the summed probabilities."""
    m = X.shape[2]
    if probabilities is None:
        probabilities = torch.zeros((n_rows, m), dtype=X.dtype, device=X.device)
    done_X: list[torch.Tensor] = []  # results of trajectories that finished early, the last ones first
    done_probabilities: list[torch.Tensor] = []
    for k, count in zip(substeps, still):
        if count != m:  # trajectories count .. m-1 are done: keep their results, go on with the rest (as copies)
            done_X.append(X[..., count:])
            done_probabilities.append(probabilities[:, count:])
            m = count
            X, probabilities, inputs = X[..., :m].contiguous(), probabilities[:, :m].contiguous(), inputs[:, :m].contiguous()
            active, inverse_n = active[:m].clone(), inverse_n[:m].clone()
        X, probabilities = substep(X, probabilities, inputs, active, inverse_n, k, dt)
    if not done_X:
        return X, probabilities
    return torch.cat([X, *done_X[::-1]], dim=2), torch.cat([probabilities, *done_probabilities[::-1]], dim=1)
