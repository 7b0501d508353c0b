"""The geometric-phase check (exsnn.analysis.geometric_phase) against exact answers: a two-state model whose diabatic
states cross (one conical intersection: the coupling integral around it is pi) or only touch (no intersection: 0),
and the SO2 LVC model's S1/S2 seam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from exsnn.analysis.geometric_phase import geometric_phase, locate_intersection, loop_integral, loop_positions
from exsnn.errors import ConfigurationError
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.potentials.diabatic import adiabatic_from_diabatic
from exsnn.potentials.lvc import LVCPotential


class TwoStatePlane(Potential):
    """One atom moving in x, y; diabatic H = [[D, c], [c, -D]] with c = 0.02 y and D = 0.05 x (crossing: an
    intersection at the origin) or D = sqrt((0.05 x)^2 + eps^2) (touching: the same energies away from x = 0, and no
    intersection), Hartree and Bohr; `x0` moves the whole model by x0 Bohr in x, `slope` replaces the 0.02 of c."""

    def __init__(self, touching: bool, eps: float = 2e-3, x0: float = 0.0, slope: float = 0.02) -> None:
        self.n_states, self.touching, self.eps, self.x0, self.slope = 2, touching, eps, x0, slope
        self.numbers = torch.ones(1, dtype=torch.long)
        self.masses = torch.full((1,), 1836.0, dtype=torch.float64)

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None) -> PotentialOutput:
        x, y = positions[:, 0, 0] - self.x0, positions[:, 0, 1]
        B = len(x)
        d, dd = 0.05 * x, torch.full_like(x, 0.05)
        if self.touching:
            d, dd = torch.sqrt(d * d + self.eps**2), 0.05 * d / torch.sqrt(d * d + self.eps**2)
        c = self.slope * y
        hamiltonian = torch.stack([torch.stack([d, c], -1), torch.stack([c, -d], -1)], -2)
        gradient = torch.zeros(B, 2, 2, 1, 3, dtype=torch.float64)
        gradient[:, 0, 0, 0, 0], gradient[:, 1, 1, 0, 0] = dd, -dd
        gradient[:, 0, 1, 0, 1] = gradient[:, 1, 0, 0, 1] = self.slope
        return adiabatic_from_diabatic(hamiltonian, gradient, states, all_forces, nacs)


def test_the_coupling_integral_is_pi_around_an_intersection_and_zero_without_one() -> None:
    plane = (np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    origin = np.zeros((1, 3))
    crossing = geometric_phase(TwoStatePlane(touching=False), origin, (0, 1), radius=0.2, plane=plane)
    assert abs(crossing.integral) == pytest.approx(np.pi, abs=0.01) and crossing.encloses
    assert crossing.closure > 0.99 and crossing.smallest_gap_ev > 0
    # touching diabatic states: energies within 2% of the crossing ones on the loop (but near x = 0), no intersection
    touching = geometric_phase(TwoStatePlane(touching=True), origin, (0, 1), radius=0.2, plane=plane)
    assert abs(touching.integral) < 0.05 and not touching.encloses
    assert touching.largest_gap_ev == pytest.approx(crossing.largest_gap_ev, rel=0.03)
    # a loop beside the intersection of the crossing model encloses none
    beside = geometric_phase(TwoStatePlane(touching=False), np.array([[0.5, 0.0, 0.0]]), (0, 1), radius=0.2, plane=plane)
    assert abs(beside.integral) < 0.05 and not beside.encloses
    # the branching plane found at the centre (no plane given) is this one: the same answer
    found = geometric_phase(TwoStatePlane(touching=False), np.array([[0.01, 0.01, 0.0]]), (0, 1), radius=0.2)
    assert abs(found.integral) == pytest.approx(np.pi, abs=0.01)


def test_coupling_signs_at_each_point_do_not_matter() -> None:
    """Electronic-structure codes and the network give each coupling with an arbitrary sign: the same |integral|."""
    potential = TwoStatePlane(touching=False)
    positions = loop_positions(np.zeros((1, 3)), np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]), 0.2, 64)
    nacs = potential.compute(torch.as_tensor(positions)).nacs[:, 0].numpy()
    flips = np.random.default_rng(3).choice([-1.0, 1.0], size=len(nacs))[:, None, None]
    exact, _ = loop_integral(positions, nacs)
    flipped, _ = loop_integral(positions, nacs * flips)
    assert abs(flipped) == pytest.approx(abs(exact), abs=1e-12) and abs(exact) == pytest.approx(np.pi, abs=0.01)


def test_bad_loops_are_refused() -> None:
    potential = TwoStatePlane(touching=False)
    with pytest.raises(ConfigurationError, match="radius"):
        geometric_phase(potential, np.zeros((1, 3)), (0, 1), radius=0.0)
    with pytest.raises(ConfigurationError, match="pair"):
        geometric_phase(potential, np.zeros((1, 3)), (1, 1), radius=0.1)
    with pytest.raises(ConfigurationError, match="at least 8 points"):
        loop_integral(np.zeros((4, 1, 3)), np.zeros((4, 1, 3)))


def test_so2_lvc_s1_s2_seam_is_an_intersection(shared_data: Path) -> None:
    """The SO2 LVC model's S1 and S2 cross (its couplings are linear): a small loop around a point of their seam gives
    pi, the same loop moved off the seam 0."""
    so2 = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    x0, masses, _, modes = so2.harmonic_modes()
    cart = (modes / np.sqrt(np.repeat(masses, 3))[:, None]).T.reshape(modes.shape[1], *x0.shape)

    def gap(q: np.ndarray) -> float:
        out = so2.compute(torch.as_tensor(x0 + np.tensordot(q, cart, 1))[None], nacs=False)
        return float(out.energies[0, 2] - out.energies[0, 1])

    seam = minimize(gap, np.zeros(len(cart)), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    assert seam.fun < 1e-4  # Hartree: on the seam
    center = x0 + np.tensordot(seam.x, cart, 1)
    on = geometric_phase(so2, center, (1, 2), radius=0.02)
    assert on.encloses and abs(on.integral) == pytest.approx(np.pi, abs=0.1) and on.closure > 0.9
    u = np.tensordot(np.eye(len(cart))[0], cart, 1)
    off = geometric_phase(so2, center + 0.3 * u / np.linalg.norm(u), (1, 2), radius=0.02)
    assert not off.encloses and abs(off.integral) < 0.2


def test_the_intersection_search_reaches_a_crossing_and_reports_a_touching_seam() -> None:
    """The first-order search (one potential call a step) lands on the crossing model's intersection at the origin,
    where a loop encloses it; the touching model has none: the search says so and stops at its smallest gap."""
    start = np.array([[0.3, -0.2, 0.0]])
    found = locate_intersection(TwoStatePlane(touching=False), start, (0, 1))
    assert found.converged and found.gap_ev < 0.01 and found.calls <= 3
    assert np.abs(found.center[0, :2]).max() < 0.01
    loop = geometric_phase(TwoStatePlane(touching=False), found.center, (0, 1), radius=0.1, n_points=16, plane=found.plane)
    assert loop.encloses and abs(loop.integral) == pytest.approx(np.pi, abs=0.15)  # 16 points: the trapezoid rule
    touching = locate_intersection(TwoStatePlane(touching=True), start, (0, 1), max_calls=6)
    assert not touching.converged and touching.calls == 6
    assert 2 * 2e-3 * 27.211 <= touching.gap_ev < 0.15  # never below 2 eps, the touching model's smallest gap
    with pytest.raises(ConfigurationError, match="max_calls"):
        locate_intersection(TwoStatePlane(touching=False), start, (0, 1), max_calls=0)


def test_a_member_s_own_seam_is_found_from_the_oracle_s_and_measured_in_its_branching_plane() -> None:
    """The campaign's seam check (exsnn.active.seam.member_seam_shift): a member whose intersection is the oracle's
    is 0 off; one whose whole surface is moved 0.08 Bohr along the branching plane is 0.08 off, more
    than the default max_shift = 0.05 though a 0.1-Bohr loop still encloses its intersection; a touching member has
    no own seam (None) and its gap there stays open."""
    from exsnn.active.config import SeamConfig
    from exsnn.active.seam import loop_geometry, member_seam_shift

    center = np.zeros((1, 3))
    points = loop_positions(center, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]), 0.1, 16)
    origin, plane = loop_geometry(points)
    assert np.abs(origin).max() < 1e-12 and np.allclose(np.abs(plane @ np.array([0.0, 0.0, 1.0])), 0.0)
    seam = SeamConfig()
    assert member_seam_shift(TwoStatePlane(touching=False), origin, plane, (0, 1), seam)[0] == pytest.approx(0, abs=1e-6)
    moved = TwoStatePlane(touching=False, x0=0.08)
    shift, gap = member_seam_shift(moved, origin, plane, (0, 1), seam)
    assert shift == pytest.approx(0.08, abs=1e-3) and shift > seam.max_shift and gap < seam.tolerance_ev
    assert geometric_phase(moved, origin, (0, 1), radius=0.1, plane=(plane[0].reshape(1, 3), plane[1].reshape(1, 3))).encloses
    shift, gap = member_seam_shift(TwoStatePlane(touching=True), origin, plane, (0, 1), seam)
    assert shift is None and gap > seam.tolerance_ev
    # a member without coupling (no branching plane: the search cannot step) 0.08 off has no own seam either
    shift, gap = member_seam_shift(TwoStatePlane(touching=False, x0=0.08, slope=0.0), origin, plane, (0, 1), seam)
    assert shift is None and gap == pytest.approx(2 * 0.05 * 0.08 * 27.211, rel=1e-3)


def test_so2_lvc_intersection_search_takes_a_few_oracle_calls(shared_data: Path) -> None:
    """From a Wigner-sampled SO2 geometry the search reaches the LVC model's S1/S2 seam in a few calls (its couplings
    are linear, so the two-state model is nearly exact there), and a 16-point loop there gives pi."""
    from exsnn.dynamics.initial_conditions import wigner_harmonic

    so2 = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    starts = wigner_harmonic(*so2.harmonic_modes(), 3, seed=3)[0]
    for start in np.asarray(starts):
        found = locate_intersection(so2, start, (1, 2))
        assert found.converged and found.calls <= 4
        loop = geometric_phase(so2, found.center, (1, 2), radius=0.1, n_points=16, plane=found.plane)
        assert loop.encloses and abs(loop.integral) == pytest.approx(np.pi, abs=0.15)
