"""The optional fusion of the integrator's arithmetic (`exsnn.dynamics.fusion`, FSSHSettings.compile): the same
numbers as eager arithmetic to round-off, a fallback that warns once, and the [integrator] key. Compiling on the
CPU needs a C++ compiler and takes tens of seconds: those checks are slow-marked (GPU checks in test_gpu.py)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from exsnn.dynamics.config import load_config
from exsnn.dynamics.decoherence import damped_parts, energy_based_decoherence
from exsnn.dynamics.electronic import PairTable, auto_substeps, propagate_coefficients
from exsnn.dynamics.fusion import Fused
from exsnn.dynamics.scattering import run_scattering
from exsnn.errors import DataError

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="torch.compile on the CPU needs a C++ compiler")


def random_step(B: int, N: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, N, dtype=torch.complex128, generator=g)
    c = c / c.abs().square().sum(1, keepdim=True).sqrt()
    E_old = 0.2 * torch.rand(B, N, generator=g, dtype=torch.float64)
    T_old = 0.01 * torch.randn(B, N * (N - 1) // 2, generator=g, dtype=torch.float64)
    active = torch.randint(0, N, (B,), generator=g)
    return c, active, E_old, E_old + 1e-3, T_old, 1.1 * T_old


def test_a_disabled_fusion_is_the_eager_function() -> None:
    kernel = Fused(auto_substeps, False)
    assert not kernel.compiled
    args = random_step(5)[2:]
    assert torch.equal(kernel(*args, 20.0, 0.05), auto_substeps(*args, 20.0, 0.05))


def test_a_failing_compilation_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(function, **options):  # noqa: ANN001, ANN003, ANN202 - stands in for a missing compiler
        def compiled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no working C++ compiler\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = Fused(auto_substeps, True, "substep counts")
    args = random_step(5)[2:]
    with pytest.warns(RuntimeWarning, match="substep counts failed .*no working C\\+\\+ compiler"):
        first = kernel(*args, 20.0, 0.05)
    assert not kernel.compiled and torch.equal(first, auto_substeps(*args, 20.0, 0.05))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel(*args, 20.0, 0.05)  # no second warning


SCATTERING_INPUT = """
[potential]
spec = "tully1"
[initial_conditions]
sampling = "scattering"
momentum = 20.0
n_trajectories = 10
initial_state = 0
[integrator]
dt_fs = 0.5
duration_fs = 10.0
{line}
[output]
file = "run.h5"
"""


def test_the_integrator_key_compile(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    for line, expected in (("compile = true", True), ("", False)):
        path.write_text(SCATTERING_INPUT.format(line=line))
        assert load_config(path).settings.compile is expected
    path.write_text(SCATTERING_INPUT.format(line='compile = "yes"'))
    with pytest.raises(DataError, match=r"\[integrator\] compile"):
        load_config(path)


@pytest.mark.slow
@needs_compiler
def test_fused_arithmetic_matches_the_eager_one_on_the_cpu() -> None:
    c, active, E_old, E_new, T_old, T_new = random_step(200)
    n_sub = auto_substeps(E_old, E_new, T_old, T_new, 20.0, 0.05)
    n_sub[:60] += torch.arange(60) % 4  # trajectories that go on for more substeps: a shrinking prefix
    table = PairTable(3)
    substep, counts, damp = Fused(table.substep, True), Fused(auto_substeps, True), Fused(damped_parts, True)
    assert torch.equal(counts(E_old, E_new, T_old, T_new, 20.0, 0.05), auto_substeps(E_old, E_new, T_old, T_new, 20.0, 0.05))
    eager = propagate_coefficients(c, active, E_old, E_new, T_old, T_new, n_sub, 20.0, table)
    fused = propagate_coefficients(c, active, E_old, E_new, T_old, T_new, n_sub, 20.0, table, substep)
    assert substep.compiled and counts.compiled
    torch.testing.assert_close(fused[0], eager[0], rtol=0, atol=1e-13)
    torch.testing.assert_close(fused[1], eager[1], rtol=0, atol=1e-13)
    kinetic = 0.01 * torch.rand(200, dtype=torch.float64)
    torch.testing.assert_close(energy_based_decoherence(c, active, E_new, kinetic, 20.0, 0.1, damp),
                               energy_based_decoherence(c, active, E_new, kinetic, 20.0, 0.1), rtol=0, atol=1e-14)
    assert damp.compiled


@pytest.mark.slow
@needs_compiler
def test_fused_scattering_gives_the_eager_outcomes() -> None:
    eager = run_scattering("tully1", 20.0, 300, seed=5, dt=20.0)
    fused = run_scattering("tully1", 20.0, 300, seed=5, dt=20.0, compile=True)
    assert fused.probabilities == eager.probabilities  # round-off does not change a hop of 300 trajectories here
