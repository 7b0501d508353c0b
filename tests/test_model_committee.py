"""Committees, the loss's label masks and the ASE calculator: regression tests for defects found in review."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import schnetpack.properties as structure
import torch
from test_model import GEOMETRY, molecule_batch, small_network

from exsnn.errors import ConfigurationError
from exsnn.model.loss import LabelScales, LossWeights, compute_loss
from exsnn.model.potential import ModelPotential, model_files
from exsnn.model.training import save_network

NUMBERS = np.array([6, 7, 1, 1, 1, 1])


def committee_folder(root: Path, members: list[torch.nn.Module]) -> Path:
    """A committee folder as `exsnn train --committee` writes it (member paths relative to the folder)."""
    folder = root / "committee"
    for k, network in enumerate(members):
        (folder / f"member_{k}").mkdir(parents=True)
        save_network(network, folder / f"member_{k}" / "model.pt")
    (folder / "committee.json").write_text(json.dumps({"members": [f"member_{k}/model.pt" for k in range(len(members))]}))
    return folder


def test_committee_loads_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = committee_folder(tmp_path, [small_network(), small_network()])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative member paths must be taken from the committee folder, not from here
    assert [f.resolve() for f in model_files(folder)] == [(folder / f"member_{k}" / "model.pt").resolve() for k in range(2)]
    potential = ModelPotential(os.path.relpath(folder, elsewhere), NUMBERS, dtype=torch.float64)
    assert len(potential.networks) == 2


class PhaseFlipped(torch.nn.Module):
    """A member whose adiabatic state `state` has the opposite phase: every NAC and transition dipole involving it
    changes sign, energies and forces do not."""

    def __init__(self, network: torch.nn.Module, state: int) -> None:
        from exsnn.data.properties import dipole_pairs, state_pairs

        super().__init__()
        self.network, self.config = network, network.config
        flip = lambda pairs: torch.tensor([-1.0 if (i == state) != (j == state) else 1.0 for i, j in pairs], dtype=torch.float64)  # noqa: E731
        self.nac_signs, self.dipole_signs = flip(state_pairs(3)), flip(dipole_pairs(3))

    @property
    def n_states(self) -> int:
        return self.network.n_states

    def forward(self, batch: dict[str, torch.Tensor], **options: object) -> dict[str, torch.Tensor]:
        out = dict(self.network(batch, **options))
        out["nacs"] = out["nacs"] * self.nac_signs[None, :, None]
        out["dipoles"] = out["dipoles"] * self.dipole_signs[None, :, None]
        return out


def test_committee_transition_dipoles_follow_the_nac_signs(tmp_path: Path) -> None:
    member = small_network(dipoles=True)
    single = ModelPotential(committee_folder(tmp_path / "one", [member]), NUMBERS, dtype=torch.float64)
    pair = ModelPotential(committee_folder(tmp_path / "two", [member]), NUMBERS, dtype=torch.float64)
    pair.networks.append(PhaseFlipped(pair.networks[0], state=1))
    positions = GEOMETRY[None]
    alone = single.compute(positions, nacs=True)
    mixed = pair.compute(positions, nacs=True)
    # aligned: the opposite phase neither cancels the NACs nor the transition dipoles
    assert float(alone.dipoles[0, 1].abs().min()) > 1e-4 and float(alone.nacs.abs().max()) > 1e-4
    torch.testing.assert_close(mixed.nacs, alone.nacs)
    torch.testing.assert_close(mixed.dipoles, alone.dipoles)
    assert float(pair.last_disagreement["dipoles"].abs().max()) < 1e-10


def labelled_batch(n_molecules: int = 4) -> dict[str, torch.Tensor]:
    """n copies of the test molecule (slightly displaced) with random labels of every kind."""
    g = torch.Generator().manual_seed(4)
    batches = [molecule_batch(GEOMETRY + 0.05 * torch.randn(GEOMETRY.shape, generator=g, dtype=torch.float64))
               for _ in range(n_molecules)]
    n = len(GEOMETRY)
    batch = {
        structure.Z: torch.cat([b[structure.Z] for b in batches]),
        structure.R: torch.cat([b[structure.R] for b in batches]),
        structure.n_atoms: torch.full((n_molecules,), n),
        structure.idx_m: torch.arange(n_molecules).repeat_interleave(n),
        structure.idx_i: torch.cat([b[structure.idx_i] + k * n for k, b in enumerate(batches)]),
        structure.idx_j: torch.cat([b[structure.idx_j] + k * n for k, b in enumerate(batches)]),
        structure.offsets: torch.cat([b[structure.offsets] for b in batches]),
        "energies": torch.tensor([[-6.0, -5.8, -5.7]] * n_molecules, dtype=torch.float64),
        "forces": torch.randn((n_molecules * n, 3, 3), generator=g, dtype=torch.float64) * 0.01,
        "nacs": torch.randn((n_molecules * n, 3, 3), generator=g, dtype=torch.float64),
        "dipoles": torch.randn((n_molecules, 6, 3), generator=g, dtype=torch.float64),
    }
    for key in ("energies", "forces", "nacs", "dipoles"):
        batch[f"{key}_mask"] = torch.ones(n_molecules, dtype=torch.bool)
    return batch


def test_loss_ignores_predicted_nacs_of_frames_without_nac_labels() -> None:
    net = small_network(dipoles=True)
    batch = labelled_batch()
    batch["nacs_mask"] = torch.tensor([True, False, True, False])  # frames 1 and 3: dipoles but no NACs
    out = net(batch, forces="all")
    reference, parts = compute_loss(out, batch, LossWeights(), LabelScales())
    changed = dict(out)
    atoms = (batch[structure.idx_m] == 1) | (batch[structure.idx_m] == 3)
    changed["smooth_nacs"] = out["smooth_nacs"].clone()
    changed["smooth_nacs"][atoms] += 3.0  # predictions where there is no label: the loss must not see them
    moved, _ = compute_loss(changed, batch, LossWeights(), LabelScales())
    torch.testing.assert_close(moved, reference, atol=1e-12, rtol=0)
    labelled = dict(out)
    labelled["smooth_nacs"] = out["smooth_nacs"].clone()
    labelled["smooth_nacs"][batch[structure.idx_m] == 0] += 3.0
    assert compute_loss(labelled, batch, LossWeights(), LabelScales())[0] > reference + 1.0  # labelled frames count


def test_transition_dipole_errors_are_averaged_not_summed() -> None:
    """Only transition dipoles labelled (no NACs): the coupling part is the mean squared error per component with
    the best state-sign vector, whatever the number of frames."""
    from exsnn.data.phases import pair_signs, sign_vectors

    net = small_network(dipoles=True)
    transition = [1, 2, 4]  # dipole pairs 01, 02, 12
    signs = pair_signs(sign_vectors(3), 3, [(0, 1), (0, 2), (1, 2)])  # (S, 3)
    values = []
    for copies in (2, 4):
        batch = labelled_batch(copies)
        batch["dipoles"] = batch["dipoles"][:1].repeat(copies, 1, 1)
        batch["nacs_mask"] = torch.zeros(copies, dtype=torch.bool)
        out = {key: value.detach() for key, value in net(batch, forces=None).items()}
        out["dipoles"] = out["dipoles"][:1].repeat(copies, 1, 1)
        _, parts = compute_loss(out, batch, LossWeights(), LabelScales())
        pred, ref = out["dipoles"][0, transition], batch["dipoles"][0, transition]
        expected = min(float(((pred - s[:, None] * ref) ** 2).mean()) for s in signs)
        assert float(parts["couplings"]) == pytest.approx(expected, rel=1e-10)
        values.append(float(parts["couplings"]))


def test_ase_calculator_state_change_recomputes(tmp_path: Path) -> None:
    from ase import Atoms

    from exsnn.model.ase_calculator import ExsnnCalculator
    from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV

    folder = committee_folder(tmp_path, [small_network()])
    atoms = Atoms(numbers=NUMBERS, positions=GEOMETRY.numpy() / ANGSTROM_IN_BOHR)
    atoms.calc = ExsnnCalculator(folder / "member_0", state=1)
    direct = ModelPotential(folder / "member_0", NUMBERS).compute(GEOMETRY[None], all_forces=True).energies[0] * HARTREE_IN_EV
    assert atoms.get_potential_energy() == pytest.approx(float(direct[1]), rel=1e-6)
    atoms.calc.set(state=2)  # ASE's rule: a changed parameter drops the cached results
    assert atoms.get_potential_energy() == pytest.approx(float(direct[2]), rel=1e-6)
    atoms.calc.state = 0
    assert atoms.get_potential_energy() == pytest.approx(float(direct[0]), rel=1e-6)
    states = atoms.calc.get_property("state_energies", atoms)
    np.testing.assert_allclose(states, direct.numpy(), rtol=1e-6)
    assert "energies" not in atoms.calc.results  # ASE's per-atom energies key is not reused for states


def run_point(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", "point", *map(str, args)], capture_output=True, text=True)


def test_point_refuses_bad_models_and_structures(tmp_path: Path) -> None:
    network = small_network()
    network.config.elements = [1, 6, 7]  # as `exsnn train` records them
    model = committee_folder(tmp_path, [network]) / "member_0"
    good = tmp_path / "ch2nh2.xyz"
    good.write_text("6\n\nC 0 0 0\nN 0 0 1.28\nH 0 0.94 -0.54\nH 0 -0.94 -0.54\nH 0 0.87 1.85\nH 0 -0.87 1.85\n")
    assert run_point("--potential", f"model:{model}", good, "--json").returncode == 0
    cases = {
        "nan": (good.read_text().replace("N 0 0 1.28", "N 0 nan 1.28"), f"model:{model}", ["frame 0: positions", "NaN"]),
        "oxygen": (good.read_text().replace("N 0 0 1.28", "O 0 0 1.28"), f"model:{model}", ["elements", "O", "trained on"]),
    }
    garbage = tmp_path / "garbage" / "model.pt"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00\x01 not a model" * 10)
    foreign = tmp_path / "foreign" / "model.pt"
    foreign.parent.mkdir()
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases["garbage"] = (good.read_text(), f"model:{garbage.parent}", [str(garbage), "not a readable exsnn model file"])
    cases["foreign"] = (good.read_text(), f"model:{foreign.parent}", [str(foreign), "not an exsnn model file"])
    cases["driver"] = (good.read_text(), f"model:{model},driver=median", [f"model:{model},driver=median", "driver",
                                                                       "must be one of"])
    cases["hamiltonian"] = (good.read_text(), f"model:{model.parent},driver=hamiltonian", ["driver", "diabatic head"])
    for name, (text, spec, fragments) in cases.items():
        geometry = tmp_path / f"{name}.xyz"
        geometry.write_text(text)
        result = run_point("--potential", spec, geometry)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr)
        for fragment in fragments:
            assert fragment in result.stderr, (name, result.stderr)


def two_diabatic_members() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two diabatic-head networks with indexed couplings whose weights differ by a seeded perturbation."""
    first = small_network(head="diabatic-indexed")
    second = small_network(head="diabatic-indexed")
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7), dtype=parameter.dtype))
    return first, second


def test_members_driver_gives_each_trajectory_one_members_own_surface(tmp_path: Path) -> None:
    """driver="members": trajectory t gets member t mod K's own energies, forces, NACs and state vectors (no
    averaging, no sign alignment), while the disagreement is still the committee's."""
    first, second = two_diabatic_members()
    both = committee_folder(tmp_path / "both", [first, second])
    alone = [ModelPotential(committee_folder(tmp_path / f"alone_{k}", [m]), NUMBERS, dtype=torch.float64)
             for k, m in enumerate((first, second))]
    driven = ModelPotential(both, NUMBERS, dtype=torch.float64, driver="members")
    averaged = ModelPotential(both, NUMBERS, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    positions = GEOMETRY[None] + 0.1 * torch.randn((4, 6, 3), generator=g, dtype=torch.float64)
    states = torch.tensor([2, 1, 0, 2])
    ids = torch.tensor([4, 7, 1, 2])  # members 0, 1, 1, 0
    out = driven.compute(positions, states=states, trajectories=ids)
    mean = averaged.compute(positions, states=states, trajectories=ids)
    for b, k in enumerate((0, 1, 1, 0)):
        own = alone[k].compute(positions[b:b + 1], states=states[b:b + 1])
        for key in ("energies", "forces", "nacs", "dipoles", "state_vectors"):
            torch.testing.assert_close(getattr(out, key)[b], getattr(own, key)[0], atol=1e-12, rtol=0)
    assert float((out.energies - mean.energies).abs().max()) > 1e-4  # the members differ: the mean is no member
    for key, value in averaged.last_disagreement.items():
        torch.testing.assert_close(driven.last_disagreement[key], value)
    all_forces = driven.compute(positions, all_forces=True, trajectories=ids).all_forces
    torch.testing.assert_close(all_forces[1], alone[1].compute(positions[1:2], all_forces=True).all_forces[0], atol=1e-12, rtol=0)
    assert "one member" in driven.describe()
    with pytest.raises(ConfigurationError, match="driver"):
        ModelPotential(both, NUMBERS, driver="median")


class DiabaticSignFlipped(torch.nn.Module):
    """A diabatic-head member whose diabatic state `state` has the opposite sign (H_ij and dH_ij/dR of every pair
    with that state change sign) and whose diabatic states come in another `order`: the same physics in another
    diabatic gauge."""

    def __init__(self, network: torch.nn.Module, state: int, order: list[int] | None = None) -> None:
        super().__init__()
        self.network, self.config, self.diabatic = network, network.config, True
        signs = torch.ones(network.n_states, dtype=torch.float64)
        signs[state] = -1.0
        self.flip = signs[:, None] * signs[None, :]
        self.order = order or list(range(network.n_states))  # and the diabatic states in another order

    @property
    def n_states(self) -> int:
        return self.network.n_states

    def forward(self, batch: dict[str, torch.Tensor], **options: object) -> dict[str, torch.Tensor]:
        out = dict(self.network(batch, **options))
        o = self.order
        out["hamiltonian"] = (out["hamiltonian"] * self.flip)[:, o][:, :, o]
        out["hamiltonian_derivative"] = (out["hamiltonian_derivative"] * self.flip[None, :, :, None])[:, o][:, :, o]
        return out


def test_hamiltonian_driver_averages_aligned_diabatic_hamiltonians_into_one_consistent_surface(tmp_path: Path) -> None:
    """driver="hamiltonian": energies are the eigenvalues of the members' mean diabatic H (aligned), and its
    forces are minus their gradient (finite differences), so the averaged surface conserves energy; a member in
    another diabatic gauge (state signs and order) changes nothing."""
    first, second = two_diabatic_members()
    folder = committee_folder(tmp_path / "both", [first, second])
    driven = ModelPotential(folder, NUMBERS, dtype=torch.float64, driver="hamiltonian")
    g = torch.Generator().manual_seed(5)
    positions = GEOMETRY[None] + 0.1 * torch.randn((3, 6, 3), generator=g, dtype=torch.float64)
    states = torch.tensor([2, 1, 0])
    out = driven.compute(positions, states=states, all_forces=True)
    batch = driven.batch(positions)
    members = [network(batch, forces=None) for network in driven.networks]
    expected = torch.linalg.eigvalsh(0.5 * (members[0]["hamiltonian"] + members[1]["hamiltonian"]))
    torch.testing.assert_close(out.energies, expected, atol=1e-12, rtol=0)
    mean = ModelPotential(folder, NUMBERS, dtype=torch.float64).compute(positions, states=states)
    assert float((out.energies - mean.energies).abs().max()) > 1e-6  # not the mean of the adiabatic energies
    # forces = -dE/dR of the averaged surface, every state (central differences, 1e-4 Bohr)
    step = 1e-4
    for atom, axis in ((0, 2), (3, 1), (5, 0)):
        shifted = positions.clone()
        shifted[:, atom, axis] += step
        up = driven.compute(shifted, nacs=False).energies
        shifted[:, atom, axis] -= 2 * step
        down = driven.compute(shifted, nacs=False).energies
        torch.testing.assert_close(out.all_forces[:, :, atom, axis], -(up - down) / (2 * step), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(out.forces, out.all_forces[torch.arange(3), states])
    assert out.nacs is not None and out.state_vectors is not None
    # a member in another diabatic gauge (signs, order): aligned before averaging, so the result is unchanged
    flipped = ModelPotential(folder, NUMBERS, dtype=torch.float64, driver="hamiltonian")
    for order in (None, [2, 0, 1]):
        flipped.networks[1] = DiabaticSignFlipped(driven.networks[1], state=1, order=order)
        again = flipped.compute(positions, states=states, all_forces=True)
        for key in ("energies", "all_forces", "forces", "nacs"):
            torch.testing.assert_close(getattr(again, key), getattr(out, key), atol=1e-12, rtol=0)
    with pytest.raises(ConfigurationError, match="diabatic head"):
        ModelPotential(committee_folder(tmp_path / "adiabatic", [small_network(), small_network()]), NUMBERS,
                       driver="hamiltonian")
