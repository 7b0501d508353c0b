"""Geometric phase of two adiabatic states around a closed loop: does the loop enclose a conical intersection?

Around a two-state conical intersection the real adiabatic states change sign (Longuet-Higgins, Proc. R. Soc. A 344,
147 (1975); Mead and Truhlar, J. Chem. Phys. 70, 2284 (1979)). With the mixing angle theta of the two states,
d_ij = <i|grad j> = -grad theta, and theta turns by pi on a loop around the intersection: the line integral of d_ij
around a loop that encloses one intersection is +-pi, around a loop that encloses none it is 0 (for two states alone;
couplings to other states move it from these values).

This tells a model whose quasi-diabatic states cross at a seam from one whose states only touch there (issue #14):
both give the same energies, forces and sign-free couplings away from the seam itself, but only the crossing kind
has an intersection inside a loop around it, and only the crossing kind carries surface hopping through the seam.

The couplings may come with an arbitrary sign at every point (an electronic-structure code, the network's phase-free
output). They are aligned along the loop by continuity (each keeps the sign that overlaps positively with the one
before), which fixes them up to one overall sign; the magnitude of the integral is the answer.

Units: positions Bohr, couplings 1/Bohr, energies Hartree; the integral is in radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from exsnn.data.properties import state_pairs
from exsnn.data.seam_loops import MIN_LOOP_POINTS, loop_angles
from exsnn.errors import ConfigurationError
from exsnn.potentials.base import Potential
from exsnn.units import HARTREE_IN_EV

#: loops whose |integral| exceeds this (radians) enclose an intersection; pi / 2 splits the two exact answers evenly
ENCLOSES_ABOVE = np.pi / 2


@dataclass(frozen=True)
class LoopPhase:
    """The line integral of the coupling of one state pair around one loop.

    integral: radians (about +-pi around one intersection, about 0 around none); encloses: |integral| > pi/2;
    closure: cosine between the last and the first aligned coupling (near 1 when the loop is sampled finely enough);
    smallest_gap_ev / largest_gap_ev: E_j - E_i along the loop; n_points: points on the loop."""

    integral: float
    encloses: bool
    closure: float
    smallest_gap_ev: float
    largest_gap_ev: float
    n_points: int


def branching_plane(gradient_difference: np.ndarray, coupling: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal directions (n, 3), (n, 3) spanning the gradient difference g = grad(E_j - E_i) and the coupling
    vector h (the plane in which the two states split linearly at an intersection)."""
    g, h = np.asarray(gradient_difference, float), np.asarray(coupling, float)
    u = g / np.linalg.norm(g)
    v = h - np.sum(h * u) * u
    size = np.linalg.norm(v)
    if not np.isfinite(size) or size < 1e-8 * max(np.linalg.norm(h), 1e-300):
        raise ConfigurationError("the coupling vector is parallel to the gradient difference: no branching plane",
                                 where="geometric phase")
    return u, v / size


def loop_positions(center: np.ndarray, u: np.ndarray, v: np.ndarray, radius: float, n_points: int) -> np.ndarray:
    """(K, n, 3) Bohr: K points center + radius (cos phi u + sin phi v), phi = 2 pi k / K."""
    phi = 2 * np.pi * np.arange(n_points) / n_points
    return center[None] + radius * (np.cos(phi)[:, None, None] * u[None] + np.sin(phi)[:, None, None] * v[None])


def loop_integral(positions: np.ndarray, couplings: np.ndarray) -> tuple[float, float]:
    """The line integral (radians) of the couplings (K, n, 3) around the closed loop through positions (K, n, 3)
    (trapezoid rule, the last point joined to the first), and the closure: the cosine between the last aligned
    coupling and the first."""
    if len(positions) != len(couplings) or len(positions) < MIN_LOOP_POINTS:
        raise ConfigurationError(f"a loop needs at least {MIN_LOOP_POINTS} points with a coupling each, got "
                                 f"{len(positions)} positions and {len(couplings)} couplings", where="geometric phase")
    _, closure, integral = loop_angles(positions, couplings)
    return integral, closure


def _pair_index(potential: Potential, pair: tuple[int, int]) -> int:
    i, j = pair
    if not 0 <= i < j < potential.n_states:
        raise ConfigurationError(f"need 0 <= i < j < {potential.n_states}, got {pair}", where="geometric phase pair")
    return state_pairs(potential.n_states).index((i, j))


def potential_branching_plane(potential: Potential, center: np.ndarray, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The branching plane of states `pair` of `potential` at `center` (n, 3) Bohr (see `branching_plane`)."""
    index, (i, j) = _pair_index(potential, pair), pair
    out = potential.compute(torch.as_tensor(np.asarray(center, float)[None], dtype=torch.float64), all_forces=True, nacs=True)
    forces = out.all_forces[0].detach().cpu().numpy()  # type: ignore[union-attr]
    return branching_plane(forces[i] - forces[j], out.nacs[0, index].detach().cpu().numpy())  # type: ignore[index]


def geometric_phase(potential: Potential, center: np.ndarray, pair: tuple[int, int], radius: float,
                    n_points: int = 64, plane: tuple[np.ndarray, np.ndarray] | None = None) -> LoopPhase:
    """The coupling integral of states `pair` = (i, j) around a circle of `radius` (Bohr) about `center` (n, 3) Bohr
    in `plane` (two orthonormal (n, 3) directions; default: the branching plane of the pair at the center)."""
    index, (i, j) = _pair_index(potential, pair), pair
    if not radius > 0:
        raise ConfigurationError(f"must be > 0 Bohr, got {radius}", where="geometric phase radius")
    center = np.asarray(center, float)
    if plane is None:
        plane = potential_branching_plane(potential, center, pair)
    positions = loop_positions(center, plane[0], plane[1], radius, n_points)
    out = potential.compute(torch.as_tensor(positions, dtype=torch.float64), nacs=True)
    integral, closure = loop_integral(positions, out.nacs[:, index].detach().cpu().numpy())  # type: ignore[index]
    gaps = (out.energies[:, j] - out.energies[:, i]).detach().cpu().numpy() * HARTREE_IN_EV
    return LoopPhase(integral=integral, encloses=abs(integral) > ENCLOSES_ABOVE, closure=closure,
                     smallest_gap_ev=float(gaps.min()), largest_gap_ev=float(gaps.max()), n_points=n_points)


@dataclass(frozen=True)
class Intersection:
    """The point of smallest gap a search reached: center (n, 3) Bohr, the branching plane there (two orthonormal
    (n, 3) directions), gap_ev, potential calls made, and whether the gap fell below the tolerance."""

    center: np.ndarray
    plane: tuple[np.ndarray, np.ndarray]
    gap_ev: float
    calls: int
    converged: bool


def locate_intersection(potential: Potential, start: np.ndarray, pair: tuple[int, int], tolerance_ev: float = 0.01,
                        max_calls: int = 12, max_step_bohr: float = 0.25) -> Intersection:
    """Search the intersection of states `pair` = (i, j) nearest to `start` (n, 3) Bohr with one potential call per
    step (energies, forces, the pair's coupling; a few calls, so an expensive oracle can afford it).

    Each step solves the linear two-state model at the present point x: the gap E_j - E_i = D changes along its
    gradient g and the coupling c along h = D d_ij, so both vanish at x + s with g.s = -D and h.s = 0; s is the
    shortest such step (in the plane of g and h, capped at `max_step_bohr`), the first-order intersection search of
    e.g. Bearpark, Robb and Schlegel, Chem. Phys. Lett. 223, 269 (1994), without their energy term."""
    index, (i, j) = _pair_index(potential, pair), pair
    if not (tolerance_ev > 0 and max_calls >= 1 and max_step_bohr > 0):
        raise ConfigurationError(f"need tolerance_ev > 0, max_calls >= 1 and max_step_bohr > 0, got {tolerance_ev}, "
                                 f"{max_calls}, {max_step_bohr}", where="intersection search")
    x = np.array(start, dtype=float)
    best: Intersection | None = None
    for call in range(1, max_calls + 1):
        out = potential.compute(torch.as_tensor(x[None], dtype=torch.float64), all_forces=True, nacs=True)
        gap = float(out.energies[0, j] - out.energies[0, i])
        forces = out.all_forces[0].detach().cpu().numpy()  # type: ignore[union-attr]
        g = forces[i] - forces[j]  # the gradient of E_j - E_i
        h = out.nacs[0, index].detach().cpu().numpy() * gap  # type: ignore[index]
        converged = gap * HARTREE_IN_EV < tolerance_ev
        if best is None or gap * HARTREE_IN_EV < best.gap_ev:
            best = Intersection(center=x.copy(), plane=branching_plane(g, h), gap_ev=gap * HARTREE_IN_EV, calls=call,
                                converged=converged)
        best = Intersection(best.center, best.plane, best.gap_ev, call, best.converged)
        if converged:
            break
        gram = np.array([[np.sum(g * g), np.sum(g * h)], [np.sum(h * g), np.sum(h * h)]])
        a, b = np.linalg.lstsq(gram, np.array([-gap, 0.0]), rcond=None)[0]
        step = a * g + b * h
        size = float(np.linalg.norm(step))
        x = x + (step if size <= max_step_bohr else step * max_step_bohr / size)
    assert best is not None
    return best
