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


def aligned_couplings(couplings: np.ndarray) -> np.ndarray:
    """(K, n, 3) couplings along a path with each sign chosen to overlap positively with the one before."""
    out = np.array(couplings, dtype=float)
    for k in range(1, len(out)):
        if np.sum(out[k] * out[k - 1]) < 0:
            out[k] = -out[k]
    return out


def loop_integral(positions: np.ndarray, couplings: np.ndarray) -> tuple[float, float]:
    """The line integral (radians) of the couplings (K, n, 3) around the closed loop through positions (K, n, 3)
    (trapezoid rule, the last point joined to the first), and the closure: the cosine between the last aligned
    coupling and the first."""
    if len(positions) != len(couplings) or len(positions) < 8:
        raise ConfigurationError(f"a loop needs at least 8 points with a coupling each, got {len(positions)} positions "
                                 f"and {len(couplings)} couplings", where="geometric phase")
    d = aligned_couplings(couplings)
    closure = float(np.sum(d[-1] * d[0]) / (np.linalg.norm(d[-1]) * np.linalg.norm(d[0])))
    step = np.roll(positions, -1, axis=0) - positions
    ahead = np.roll(d, -1, axis=0)
    ahead[-1] *= np.sign(closure) or 1.0  # the first coupling as the last one continues it
    return float(np.sum(0.5 * (d + ahead) * step)), closure


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
