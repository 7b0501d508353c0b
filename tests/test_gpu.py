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
