"""ModelPotential's evaluation path: the cached all-pairs neighbour list, the optional torch.compile with its eager
fallback, denormal flushing and the `model:` spec options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import GEOMETRY, small_network

from exsnn.errors import ConfigurationError
from exsnn.model.potential import ModelPotential, parse_model_spec
from exsnn.model.training import save_network

NUMBERS = np.array([6, 7, 1, 1, 1, 1])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_network(small_network(dipoles=True), path)  # float64, cutoff 8 Bohr
    return path


def structures() -> torch.Tensor:
    """Four geometries; in the last one an H atom is 12 Bohr from the others (pairs beyond the 8 Bohr cutoff)."""
    positions = GEOMETRY[None].repeat(4, 1, 1)
    positions[1:3] += 0.1 * torch.randn((2, 6, 3), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    positions[3, 5] = torch.tensor([0.0, 12.0, 14.0], dtype=torch.float64)
    return positions


def test_all_pairs_list_gives_the_cutoff_list_predictions(model_file: Path) -> None:
    everything = ModelPotential(model_file, NUMBERS, neighbours="all-pairs")
    within = ModelPotential(model_file, NUMBERS, neighbours="cutoff")
    assert ModelPotential(model_file, NUMBERS).all_pairs  # 'auto' for a 6-atom molecule
    positions, states = structures(), torch.tensor([0, 1, 2, 1])
    assert len(within.batch(positions)["_idx_i"]) < len(everything.batch(positions)["_idx_i"])
    for options in ({"states": states, "nacs": True}, {"all_forces": True, "nacs": True}):
        a, b = everything.compute(positions, **options), within.compute(positions, **options)
        for name in ("energies", "forces", "all_forces", "nacs", "dipoles"):
            if getattr(a, name) is not None:  # zero weights beyond the cutoff: the same numbers up to round-off
                torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


def test_batch_layouts_are_kept_per_batch_size_and_bounded(model_file: Path) -> None:
    potential = ModelPotential(model_file, NUMBERS)
    first = potential.batch(structures())
    again = potential.batch(structures() + 0.1)
    assert first["_idx_i"] is again["_idx_i"] and first["_idx_m"] is again["_idx_m"]  # built once for 4 structures
    for size in range(1, 20):
        potential.batch(GEOMETRY[None].repeat(size, 1, 1))
    assert len(potential._layouts) <= 8


def test_compile_failure_falls_back_to_eager_evaluation(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(function, **options):  # noqa: ANN001, ANN003, ANN202 - stands in for a missing compiler
        def compiled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = ModelPotential(model_file, NUMBERS)
    compiled = ModelPotential(model_file, NUMBERS, compile=True)
    positions, states = structures(), torch.tensor([0, 1, 2, 1])
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        out = compiled.compute(positions, states=states, nacs=True)
    reference = eager.compute(positions, states=states, nacs=True)
    for name in ("energies", "forces", "nacs"):
        torch.testing.assert_close(getattr(out, name), getattr(reference, name), rtol=0, atol=0)
    compiled.compute(positions, states=states, nacs=True)  # no second warning: eager from now on
    assert list(compiled._compiled.values()) == [None]


def test_compiled_forces_are_autograd_forces_of_the_compiled_energies(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def tracing_compile(function, **options):  # noqa: ANN001, ANN003, ANN202 - an identity "compiler"
        calls.append(options)
        return function

    monkeypatch.setattr(torch, "compile", tracing_compile)
    compiled, eager = ModelPotential(model_file, NUMBERS, compile=True), ModelPotential(model_file, NUMBERS)
    positions, states = structures(), torch.tensor([2, 0, 1, 1])
    for options in ({"states": states, "nacs": True}, {"all_forces": True, "nacs": False}, {"nacs": True}):
        a, b = compiled.compute(positions, **options), eager.compute(positions, **options)
        for name in ("energies", "forces", "all_forces", "nacs"):
            assert (getattr(a, name) is None) == (getattr(b, name) is None)
            if getattr(a, name) is not None:
                torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    assert calls == [{"dynamic": True}]


def test_float32_networks_flush_denormals_only_while_they_run(model_file: Path) -> None:
    potential = ModelPotential(model_file, NUMBERS, dtype=torch.float32)
    assert potential.flush_denormal
    potential.compute(structures(), states=torch.tensor([0, 1, 2, 1]))
    tiny = torch.tensor(1e-310, dtype=torch.float64)
    assert float(tiny * 1.0) != 0.0  # flushing is off again after the call


def test_model_spec_options() -> None:
    assert parse_model_spec("models/run") == ("models/run", {})
    assert parse_model_spec("models/a,b,compile=1,neighbours=cutoff") == ("models/a,b", {"compile": True, "neighbours": "cutoff"})
    assert parse_model_spec("c,driver=members") == ("c", {"driver": "members"})
    assert parse_model_spec("x,compile=false") == ("x", {"compile": False})
    with pytest.raises(ConfigurationError, match="compile"):
        parse_model_spec("x,compile=maybe")
    with pytest.raises(ConfigurationError, match="neighbours"):
        ModelPotential(Path("unused"), NUMBERS, neighbours="some")
