"""Checks that need a CUDA device (marked `gpu`; skipped without one): the network potential and the FSSH engine on
the GPU agree with the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import GEOMETRY, small_network

from exsnn.dynamics.fssh import FSSHEngine
from exsnn.dynamics.scattering import run_scattering
from exsnn.dynamics.settings import FSSHSettings
from exsnn.model.potential import ModelPotential
from exsnn.model.training import save_network

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
NUMBERS = np.array([6, 7, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_network(small_network(dipoles=True), path)
    return path


def test_model_potential_on_the_gpu_matches_the_cpu(model_file: Path) -> None:
    positions = GEOMETRY[None] + 0.05 * torch.randn((16, 6, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    states = torch.arange(16) % 3
    cpu, gpu = ModelPotential(model_file, NUMBERS), ModelPotential(model_file, NUMBERS, device="cuda")
    for options in ({"nacs": True}, {"all_forces": True, "nacs": True}):
        a = cpu.compute(positions, states=states, **options)
        b = gpu.compute(positions.cuda(), states=states.cuda(), **options)
        for name in ("energies", "forces", "all_forces", "nacs", "dipoles"):
            if getattr(a, name) is not None:
                assert getattr(b, name).device.type == "cuda"
                torch.testing.assert_close(getattr(b, name).cpu(), getattr(a, name), rtol=1e-9, atol=1e-10)


def test_fssh_with_the_network_steps_on_the_gpu(model_file: Path) -> None:
    potential = ModelPotential(model_file, NUMBERS, device="cuda")
    engine = FSSHEngine(potential, FSSHSettings(dt=10.0, n_steps=10, seed=3, max_energy_drift=1.0))
    positions = GEOMETRY[None] + 0.05 * torch.randn((64, 6, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    velocities = 1e-4 * torch.randn((64, 6, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    state = engine.run(engine.initial_state(positions, velocities, torch.full((64,), 2)))
    assert state.step == 10 and state.positions.device.type == "cuda"
    assert torch.isfinite(state.positions).all() and torch.allclose(state.coefficients.abs().square().sum(1).cpu(),
                                                                     torch.ones(64, dtype=torch.float64))


def test_scattering_on_the_gpu_agrees_with_the_cpu() -> None:
    cpu = run_scattering("tully1", 20.0, 2000, seed=5, dt=10.0)
    gpu = run_scattering("tully1", 20.0, 2000, seed=5, dt=10.0, device="cuda")
    for key, p in cpu.probabilities.items():  # the same initial conditions and random numbers: round-off apart
        assert abs(gpu.probabilities[key] - p) < 4 * np.hypot(cpu.errors[key], gpu.errors[key]) + 1e-3, key


def test_fused_integrator_on_the_gpu_follows_the_eager_one(model_file: Path) -> None:
    """FSSHSettings.compile: the same trajectories as eager arithmetic, to round-off, with the kernels compiled."""
    potential = ModelPotential(model_file, NUMBERS, device="cuda")
    positions = GEOMETRY[None] + 0.05 * torch.randn((64, 6, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    velocities = 1e-3 * torch.randn((64, 6, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    runs = []
    for compile in (False, True):
        engine = FSSHEngine(potential, FSSHSettings(dt=10.0, n_steps=10, seed=3, max_energy_drift=1.0, compile=compile))
        runs.append(engine.run(engine.initial_state(positions, velocities, torch.full((64,), 2))))
        if compile:
            assert all(kernel.compiled for kernel in engine._fused.values()), "compiling the integrator failed on the GPU"
    eager, fused = runs
    assert torch.equal(eager.active, fused.active)
    torch.testing.assert_close(fused.positions, eager.positions, rtol=0, atol=1e-10)
    torch.testing.assert_close(fused.coefficients, eager.coefficients, rtol=0, atol=1e-9)


def test_fused_substeps_on_the_gpu_depend_on_the_batch_only_through_round_off() -> None:
    """A trajectory's coefficients alone and in a batch, with the substep compiled: equal to round-off (not to the
    bit: the compiled kernel for a single trajectory is another kernel; seen on an H200 with torch 2.11)."""
    from exsnn.dynamics.electronic import PairTable, propagate_coefficients
    from exsnn.dynamics.fusion import Fused

    g = torch.Generator().manual_seed(0)
    B, N = 300, 3
    table = PairTable(N, "cuda")
    c = torch.randn(B, N, dtype=torch.complex128, generator=g)
    c = (c / c.abs().square().sum(1, keepdim=True).sqrt()).cuda()
    E_old = (0.2 * torch.rand(B, N, generator=g, dtype=torch.float64)).cuda()
    T_old = (0.01 * torch.randn(B, 3, generator=g, dtype=torch.float64)).cuda()
    active = torch.randint(0, N, (B,), generator=g).cuda()
    n_sub = torch.randint(1, 6, (B,), generator=g).cuda()
    substep = Fused(table.substep, True)
    batch = propagate_coefficients(c, active, E_old, E_old + 1e-3, T_old, 1.1 * T_old, n_sub, 20.0, table, substep)
    for k in (0, 7, 150):
        alone = propagate_coefficients(c[k:k + 1], active[k:k + 1], E_old[k:k + 1], E_old[k:k + 1] + 1e-3, T_old[k:k + 1],
                                       1.1 * T_old[k:k + 1], n_sub[k:k + 1], 20.0, table, substep)
        assert substep.compiled
        torch.testing.assert_close(alone[0][0], batch[0][k], rtol=0, atol=1e-14)
        torch.testing.assert_close(alone[1][0], batch[1][k], rtol=0, atol=1e-14)
