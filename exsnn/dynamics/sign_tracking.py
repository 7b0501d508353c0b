"""State signs along a step from the NACs alone, refined by bisecting the step where the alignment is unsure.

A potential without state vectors (a network's adiabatic head, a PySCF calculation) gives every state an arbitrary
sign at every call. The engine then keeps the signs consistent from step to step by choosing the sign vector that best
aligns the new NACs with the previous step's (`exsnn.data.phases.state_signs_from_nacs`). Near a conical intersection
a NAC turns fast, by more than 90 degrees within one nuclear step when a trajectory passes close to the seam, and the
overlap then picks the wrong sign: the coupling T = v . d flips in the electronic equations and the populations go
wrong. On the exact SO2 LVC model (benchmarks/bench_population_ceiling.py --tracking-only, 500 trajectories, 0.5 fs)
tracking by overlaps alone moves the populations by 0.072 from those tracked by the exact eigenvectors; with 0.1 fs
steps by 0.028; with the bisection below (4 levels, cosine 0.97) by 0.002, at 3.7 potential calls per step instead
of 1 (the extra ones for the unsure trajectories only). On a network trained on 500 of its Wigner samples the whole
run took 1.3 times as long (benchmarks/bench_population_ceiling.py committees, 500 trajectories, 20 fs).

So where a coupling that matters (its rotation angle |v . d| dt above `COUPLING_ANGLE_FLOOR` at either end) turns by
more than arccos(`min_cosine`) between the two ends, the step is bisected: the potential is evaluated at the midpoint
of the straight line between the two structures, the midpoint is aligned to the start and the end to the midpoint,
recursively up to `depth` levels, for the unsure trajectories only (at most 2**depth - 1 extra calls each). A
midpoint where the potential fails keeps the direct alignment. This is the NAC-only counterpart of tracking state
overlaps at a finer time step (e.g. the wavefunction-overlap tracking of SHARC, Mai, Marquetand, Gonzalez,
WIREs Comput. Mol. Sci. 8, e1370 (2018)).
"""

from __future__ import annotations

import torch

from exsnn.data.phases import pair_signs, state_signs_from_nacs
from exsnn.dynamics.failures import non_finite_rows
from exsnn.potentials.base import Potential

#: radians: a pair whose coupling turns the electronic state by less than this per step cannot make its sign matter
COUPLING_ANGLE_FLOOR = 1e-2


def unsure_rows(
    nacs_start: torch.Tensor, nacs_end: torch.Tensor, velocities: torch.Tensor, dt: float, min_cosine: float
) -> torch.Tensor:
    """(B,) True where some pair's aligned NACs (B, P, n, 3) at the two ends make a cosine below `min_cosine` while its
    coupling angle |v . d| dt (velocities (B, n, 3), dt atomic time) exceeds COUPLING_ANGLE_FLOOR at either end."""
    a, b, v = nacs_start.flatten(2), nacs_end.flatten(2), velocities.flatten(1)[:, None, :]
    cosine = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)
    angle = torch.maximum((a * v).sum(-1).abs(), (b * v).sum(-1).abs()) * dt
    return ((cosine < min_cosine) & (angle > COUPLING_ANGLE_FLOOR)).any(dim=1)


def track_signs(
    potential: Potential, start: torch.Tensor, nacs_start: torch.Tensor, end: torch.Tensor, nacs_end: torch.Tensor,
    states: torch.Tensor, ids: torch.Tensor, velocities: torch.Tensor, dt: float, depth: int, min_cosine: float,
) -> torch.Tensor:
    """The signs (B, N) of the states at `end` that follow those of `start`: positions (B, n, 3) Bohr, NACs at the
    ends (B, P, n, 3) (those at `start` already sign-consistent), active `states` (B,) and trajectory `ids` (B,) for the
    potential's calls, velocities (B, n, 3) and the step dt (atomic time) to judge which couplings matter.

    Breadth first: every unsure piece of every trajectory is halved in one potential call per level, so a step costs
    at most `depth` extra calls. Relative signs compose: the best signs against a reference flipped by s are s times
    the best signs against the reference itself, so each piece is aligned on its own and a trajectory's signs are the
    product over its pieces."""
    n_states = potential.n_states
    flips = torch.zeros((len(start), n_states), dtype=nacs_end.dtype, device=nacs_end.device)  # minus signs so far
    if nacs_end.shape[1] == 0:
        return 1.0 - flips
    rows = torch.arange(len(start), device=start.device)  # the trajectory of each piece
    a, d_a, b, d_b, h = start, nacs_start, end, nacs_end, dt
    for level in range(depth + 1):
        relative = state_signs_from_nacs(d_b, d_a, n_states)
        unsure = torch.zeros_like(rows, dtype=torch.bool)
        if level < depth:
            aligned = d_b * pair_signs(relative, n_states)[:, :, None, None]
            unsure = unsure_rows(d_a, aligned, velocities[rows], h, min_cosine)
        split = torch.nonzero(unsure)[:, 0] if bool(unsure.any()) else None
        if split is not None:
            middle = 0.5 * (a[split] + b[split])
            out = potential.compute(middle, states=states[rows[split]], nacs=True, trajectories=ids[rows[split]])
            good = ~non_finite_rows(out) if out.nacs is not None else torch.zeros_like(split, dtype=torch.bool)
            unsure[split[~good]] = False  # a failed midpoint keeps the direct alignment
            split, middle = split[good], middle[good]
            d_middle = out.nacs[good].to(d_b.dtype) if out.nacs is not None else None
        done = ~unsure
        flips.index_add_(0, rows[done], (relative[done] < 0).to(flips.dtype))
        if split is None or len(split) == 0:
            break
        rows = torch.cat([rows[split], rows[split]])
        a, b = torch.cat([a[split], middle]), torch.cat([middle, b[split]])
        d_a, d_b = torch.cat([d_a[split], d_middle]), torch.cat([d_middle, d_b[split]])  # type: ignore[list-item]
        h = 0.5 * h
    return 1.0 - 2.0 * torch.remainder(flips, 2.0)
