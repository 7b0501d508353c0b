"""Curvature-driven time-derivative couplings (exsnn.dynamics.curvature) against exact results."""

from __future__ import annotations

import numpy as np
import torch

from exsnn.dynamics.curvature import curvature_couplings, pair_gaps


def test_baeck_an_coupling_is_exact_for_a_landau_zener_crossing() -> None:
    """Two diabatic states crossing linearly in time (slope difference beta) with constant coupling a: the adiabatic
    gap is sqrt(beta^2 t^2 + 4 a^2) and the exact time-derivative coupling d theta / dt = a beta / gap^2 (tan 2 theta
    = 2 a / (beta t)). The curvature formula reproduces it; the backward difference is first order in dt."""
    a, beta = 0.002, 0.0004  # Hartree, Hartree per atomic time unit
    times = np.linspace(-40.0, 40.0, 81)
    errors = []
    for dt in (0.4, 0.1):
        gap = lambda t: np.sqrt((beta * t) ** 2 + 4 * a * a)  # noqa: E731
        now, previous, before = (torch.as_tensor(gap(times - k * dt))[:, None] for k in (0, 1, 2))
        sigma = curvature_couplings(now, previous, before, dt)[:, 0].numpy()
        exact = a * beta / gap(times - dt) ** 2  # the centred point of the three
        assert np.all(sigma >= 0)
        errors.append(np.abs(sigma - exact).max() / exact.max())
    assert errors[1] < 0.01 and errors[1] < errors[0] / 3


def test_no_coupling_without_curvature_or_history() -> None:
    gaps = torch.tensor([[0.5, 0.25, 0.75]], dtype=torch.float64)
    straight = curvature_couplings(gaps, gaps - 0.125, gaps - 0.25, 1.0)  # linear in time: no curvature
    assert torch.all(straight == 0)
    unknown = curvature_couplings(gaps, torch.full_like(gaps, torch.nan), gaps, 1.0)
    assert torch.all(unknown == 0)
    concave = curvature_couplings(gaps, gaps + 0.125, gaps, 1.0)  # a gap that opens then closes: no coupling
    assert torch.all(concave == 0)
    convex = curvature_couplings(gaps, gaps - 0.125, gaps, 1.0)  # closes then opens again: coupled
    assert torch.all(convex > 0)
    energies = torch.tensor([[0.0, 0.3, 0.1]])
    assert torch.allclose(pair_gaps(energies), torch.tensor([[0.3, 0.1, 0.2]], dtype=energies.dtype))


def test_engine_uses_the_curvature_of_its_own_energies_and_asks_for_no_nacs(shared_data) -> None:
    """With couplings = 'curvature' the engine never asks the potential for NACs, and the couplings it propagates at
    step n are those of the gaps at steps n, n-1, n-2 (none before step 2); the rescaling must be along the velocity."""
    import pytest

    from exsnn.dynamics.fssh import FSSHEngine
    from exsnn.dynamics.initial_conditions import wigner_harmonic
    from exsnn.dynamics.settings import FSSHSettings
    from exsnn.errors import ConfigurationError
    from exsnn.potentials.spec import load_potential

    oracle = load_potential(f"lvc:{shared_data / 'schnarc' / 'lvc_so2_3s' / 'LVC.template'}")
    asked = []
    compute = oracle.compute

    def recording(*args, **kwargs):
        asked.append(kwargs.get("nacs", True))
        return compute(*args, **kwargs)

    oracle.compute = recording
    with pytest.raises(ConfigurationError, match="velocity"):
        FSSHSettings(dt=10.0, n_steps=5, couplings="curvature")
    engine = FSSHEngine(oracle, FSSHSettings(dt=10.0, n_steps=60, couplings="curvature", rescale="velocity"))
    positions, velocities = wigner_harmonic(*oracle.harmonic_modes(), 8, seed=4)
    state = engine.initial_state(positions, velocities, torch.full((8,), 2))
    gaps = [pair_gaps(state.energies)]
    largest = 0.0
    for step in range(1, 61):
        engine.step(state)
        gaps.append(pair_gaps(state.energies))
        if step == 1:
            assert torch.all(state.couplings == 0)
        else:
            expected = curvature_couplings(gaps[-1], gaps[-2], gaps[-3], 10.0)
            torch.testing.assert_close(state.couplings, expected)
            largest = max(largest, float(expected.max()))
    assert not any(asked)
    assert largest > 1e-3  # the S1-S2 intersection is met
