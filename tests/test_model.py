"""The multi-state network: symmetries, autograd forces, phase-free loss, active-state path, training, potential."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import schnetpack.properties as structure
import torch
from scipy.spatial.transform import Rotation

from exsnn.data import DatasetMetadata, append_frames
from exsnn.data.frame import Frame
from exsnn.data.properties import dipole_pairs
from exsnn.data.torch_data import ExcitedStateTorchDataset
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.errors import ConfigurationError, DataError
from exsnn.model.loss import EnergyWindow, LabelScales, LossWeights, compute_loss, pair_weights
from exsnn.model.network import MultiStateNetwork, NetworkConfig
from exsnn.potentials.labelling import label_frames
from exsnn.potentials.lvc import LVCPotential

torch.manual_seed(0)


def small_network(dipoles: bool = True, representation: str = "painn", head: str = "adiabatic",
                  diabatic_dipoles: bool = False) -> MultiStateNetwork:
    """head: adiabatic, diabatic, diabatic-indexed (the diabatic head with indexed couplings) or diabatic-symmetric
    (indexed, with the exchange of the hydrogens on C and of those on N declared and the 1-2 coupling odd under it)."""
    torch.manual_seed(1)
    indexed = head.endswith(("-indexed", "-symmetric"))
    symmetric = head.endswith("-symmetric")
    config = NetworkConfig(
        head=head.split("-")[0],
        indexed_couplings=indexed,
        molecule=[6, 7, 1, 1, 1, 1] if indexed else [],
        exchange=[[2, 3], [4, 5]] if symmetric else [],
        odd_couplings=[[1, 2]] if symmetric else [],
        n_states=3,
        n_atom_basis=16,
        n_interactions=2,
        n_rbf=8,
        cutoff=8.0,
        dipoles=dipoles,
        representation=representation,
        diabatic_dipoles=diabatic_dipoles,
        energy_mean_per_atom=[-1.0, -0.9, -0.8],
        energy_std_per_atom=0.1,
        coupling_scale=0.05,
    )
    return MultiStateNetwork(config).double()


def molecule_batch(positions: torch.Tensor, numbers=(6, 7, 1, 1, 1, 1)) -> dict[str, torch.Tensor]:
    """One molecule as a SchNetPack batch with a full neighbour list."""
    n = len(numbers)
    i, j = torch.nonzero(~torch.eye(n, dtype=torch.bool)).T
    return {
        structure.Z: torch.tensor(numbers),
        structure.R: positions.clone(),
        structure.n_atoms: torch.tensor([n]),
        structure.idx_m: torch.zeros(n, dtype=torch.long),
        structure.idx_i: i,
        structure.idx_j: j,
        structure.offsets: torch.zeros((len(i), 3), dtype=torch.float64),
    }


GEOMETRY = torch.tensor(
    [[0.0, 0.0, 0.0], [0.1, 0.0, 2.5], [1.8, 0.2, -1.0], [-1.7, 0.1, -1.1], [1.7, -0.3, 3.4], [-1.8, 0.2, 3.5]],
    dtype=torch.float64,
)


@pytest.mark.parametrize(("representation", "head"), [("painn", "adiabatic"), ("so3net", "adiabatic"), ("painn", "diabatic"),
                                                      ("painn", "diabatic-dipoles")])
def test_energies_invariant_and_vectors_equivariant(representation: str, head: str) -> None:
    net = small_network(representation=representation, head=head.removesuffix("-dipoles"),
                        diabatic_dipoles=head.endswith("-dipoles"))
    base = net(molecule_batch(GEOMETRY), forces="all")
    rotation = torch.tensor(Rotation.random(random_state=3).as_matrix())
    moved = net(
        molecule_batch(GEOMETRY @ rotation.T + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)), forces="all"
    )
    torch.testing.assert_close(moved["energies"], base["energies"], atol=1e-9, rtol=0)
    for key in ("forces", "smooth_nacs", "nacs", "dipoles"):
        torch.testing.assert_close(moved[key], base[key] @ rotation.T, atol=1e-9, rtol=1e-7, msg=key)
    perm = torch.tensor([0, 1, 3, 2, 5, 4])  # swap equivalent hydrogens' labels
    permuted = net(
        molecule_batch(GEOMETRY[perm], numbers=tuple(np.array([6, 7, 1, 1, 1, 1])[perm.numpy()])), forces="all"
    )
    torch.testing.assert_close(permuted["energies"], base["energies"], atol=1e-10, rtol=0)
    for key in ("forces", "smooth_nacs", "nacs"):
        torch.testing.assert_close(permuted[key], base[key][perm], atol=1e-10, rtol=1e-8, msg=key)


@pytest.mark.parametrize("head", ["adiabatic", "diabatic", "diabatic-indexed", "diabatic-symmetric"])
def test_forces_are_minus_the_finite_difference_gradient(head: str) -> None:
    net = small_network(dipoles=False, head=head)
    out = net(molecule_batch(GEOMETRY), forces="all")
    h = 1e-5
    fd = torch.zeros_like(out["forces"])
    for a in range(6):
        for c in range(3):
            plus, minus = GEOMETRY.clone(), GEOMETRY.clone()
            plus[a, c] += h
            minus[a, c] -= h
            fd[a, :, c] = -(
                net(molecule_batch(plus), forces=None)["energies"][0]
                - net(molecule_batch(minus), forces=None)["energies"][0]
            ) / (2 * h)
    torch.testing.assert_close(out["forces"], fd, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("head", ["adiabatic", "diabatic", "diabatic-indexed"])
def test_active_state_path_equals_all_states_path(head: str) -> None:
    net = small_network(dipoles=False, head=head)
    positions = torch.cat([GEOMETRY, GEOMETRY + 0.1])
    batch = molecule_batch(positions[:6])
    batch = {k: v for k, v in batch.items()}
    two = {  # two molecules in one batch
        structure.Z: torch.tensor([6, 7, 1, 1, 1, 1] * 2),
        structure.R: torch.cat([GEOMETRY, GEOMETRY * 1.05]),
        structure.n_atoms: torch.tensor([6, 6]),
        structure.idx_m: torch.arange(2).repeat_interleave(6),
        structure.idx_i: torch.cat([batch[structure.idx_i], batch[structure.idx_i] + 6]),
        structure.idx_j: torch.cat([batch[structure.idx_j], batch[structure.idx_j] + 6]),
        structure.offsets: torch.zeros((60, 3), dtype=torch.float64),
    }
    states = torch.tensor([2, 0])
    everything = net(two, forces="all")["forces"]
    selected = net(two, forces="selected", states=states)["forces"]
    torch.testing.assert_close(selected, everything[torch.arange(12), states.repeat_interleave(6)], atol=1e-12, rtol=0)


@pytest.mark.parametrize("head", ["diabatic", "diabatic-symmetric"])
def test_diabatic_head_nacs_are_the_derivative_coupling_of_its_eigenvectors(head: str) -> None:
    """d_ij = <U_i | dU_j/dR> by central differences of the eigenvectors of the learned H (signs aligned), exactly: no
    gap regulariser (one damped the hops near every seam); the energies are the eigenvalues of the symmetric H."""
    net = small_network(dipoles=False, head=head)
    net.config.nac_epsilon = 10.0  # Hartree: the adiabatic head's gap regulariser must not touch the diabatic NACs
    out = net(molecule_batch(GEOMETRY), forces="all")
    hamiltonian = out["hamiltonian"][0]
    torch.testing.assert_close(hamiltonian, hamiltonian.T)
    torch.testing.assert_close(torch.linalg.eigvalsh(hamiltonian), out["energies"][0], atol=1e-12, rtol=0)
    vectors = out["state_vectors"][0]
    h = 1e-5
    fd = torch.zeros_like(out["nacs"])
    for a in range(6):
        for c in range(3):
            shifted = []
            for step in (h, -h):
                moved = GEOMETRY.clone()
                moved[a, c] += step
                u = net(molecule_batch(moved), forces=None)["state_vectors"][0]
                shifted.append(u * torch.sign((u * vectors).sum(0)))  # the sign of each state as at GEOMETRY
            derivative = vectors.T @ (shifted[0] - shifted[1]) / (2 * h)  # (N, N): <i | d j>
            fd[a, :, c] = derivative[[0, 0, 1], [1, 2, 2]]
    assert fd.abs().max() > 1e-3  # the states do mix
    torch.testing.assert_close(out["nacs"], fd, atol=1e-7, rtol=1e-3)


def test_indexed_couplings_can_change_sign_when_equivalent_atoms_swap() -> None:
    """Invariant diabatic elements are equal at two geometries that differ by the exchange of equivalent atoms (so a
    coupling linear in an antisymmetric displacement, as at a symmetry-required intersection, cannot be learned);
    with indexed couplings the off-diagonal elements may differ there, the diagonal ones may not. Rotations and
    translations change nothing."""
    swap = torch.tensor([0, 1, 3, 2, 4, 5])  # the two hydrogens on carbon, positions exchanged (labels kept)
    swapped = GEOMETRY.clone()
    swapped[[2, 3]] = GEOMETRY[[3, 2]]
    assert not torch.equal(swapped, GEOMETRY) and torch.equal(swapped, GEOMETRY[swap])
    off = torch.tensor([[0, 1], [0, 2], [1, 2]])
    for head, differs in (("diabatic", False), ("diabatic-indexed", True)):
        net = small_network(dipoles=False, head=head)
        base = net(molecule_batch(GEOMETRY), forces=None)["hamiltonian"][0]
        moved = net(molecule_batch(swapped), forces=None)["hamiltonian"][0]
        torch.testing.assert_close(moved.diagonal(), base.diagonal(), atol=1e-10, rtol=0)
        change = (moved[off[:, 0], off[:, 1]] - base[off[:, 0], off[:, 1]]).abs().max()
        assert (change > 1e-4) == differs, (head, change)
        rotation = torch.tensor(Rotation.random(random_state=4).as_matrix())
        turned = net(molecule_batch(GEOMETRY @ rotation.T + 1.5), forces=None)["hamiltonian"][0]
        torch.testing.assert_close(turned, base, atol=1e-10, rtol=0)


def test_declared_exchange_makes_couplings_exactly_odd_or_even() -> None:
    """With the exchange of the two hydrogen pairs declared and the 1-2 coupling odd under it: at a geometry and at its
    exchanged copy the 1-2 coupling changes sign and every other element is equal; at a geometry the exchange maps
    onto itself (planar C2v CH2NH2+ up to a rotation) the odd coupling is zero, although the network is untrained."""
    net = small_network(dipoles=False, head="diabatic-symmetric")
    swapped = GEOMETRY[torch.tensor([0, 1, 3, 2, 5, 4])]
    base = net(molecule_batch(GEOMETRY), forces=None)["hamiltonian"][0]
    moved = net(molecule_batch(swapped), forces=None)["hamiltonian"][0]
    parity = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(moved, parity * base, atol=1e-12, rtol=0)
    assert base[1, 2].abs() > 1e-4 and base[0, 2].abs() > 1e-4  # not zero by accident
    planar = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.5], [0.0, 1.8, -1.0], [0.0, -1.8, -1.0], [0.0, 1.7, 3.4],
                           [0.0, -1.7, 3.4]], dtype=torch.float64)  # the exchange is the mirror y -> -y here
    rotation = torch.tensor(Rotation.random(random_state=7).as_matrix())
    symmetric = net(molecule_batch(planar @ rotation.T + 0.7), forces=None)["hamiltonian"][0]
    assert symmetric[1, 2].abs() < 1e-12 and symmetric[0, 1].abs() > 1e-4


def test_diabatic_dipoles_are_the_quasi_diabatic_ones_in_the_adiabatic_states() -> None:
    """With diabatic dipoles the adiabatic dipole matrix is U^T mu^d U with the Hamiltonian's eigenvectors: per
    Cartesian component its trace and Frobenius norm are those of the diabatic matrix, and each element is the
    eigenvector sandwich."""
    net = small_network(head="diabatic", diabatic_dipoles=True)
    out = net(molecule_batch(GEOMETRY), forces=None)
    pairs = dipole_pairs(3)

    def full(upper: torch.Tensor) -> torch.Tensor:  # (Pd, 3) -> (3, 3, 3) symmetric in the states
        matrix = torch.zeros((3, 3, 3), dtype=upper.dtype)
        for k, (i, j) in enumerate(pairs):
            matrix[i, j] = matrix[j, i] = upper[k]
        return matrix

    diabatic, adiabatic, U = full(out["diabatic_dipoles"][0]), full(out["dipoles"][0]), out["state_vectors"][0]
    assert (diabatic - adiabatic).abs().max() > 1e-3  # the rotation is not the identity here
    for c in range(3):
        torch.testing.assert_close(adiabatic[:, :, c].trace(), diabatic[:, :, c].trace(), atol=1e-12, rtol=0)
        torch.testing.assert_close(adiabatic[:, :, c].norm(), diabatic[:, :, c].norm(), atol=1e-12, rtol=0)
        torch.testing.assert_close(adiabatic[:, :, c], U.T @ diabatic[:, :, c] @ U, atol=1e-12, rtol=0)
    from exsnn.errors import ConfigurationError

    for values in (dict(head="adiabatic", dipoles=True), dict(head="diabatic", dipoles=False)):
        with pytest.raises(ConfigurationError) as caught:
            NetworkConfig(n_states=3, diabatic_dipoles=True, **values)
        assert caught.value.where == "diabatic_dipoles"


def test_diabatic_transition_dipole_of_an_odd_pair_is_odd_under_the_exchange() -> None:
    """With the hydrogen exchange declared and the 1-2 pair odd under it, the 1-2 diabatic transition dipole changes
    sign when the exchange is applied and the other diabatic dipoles stay; at a planar geometry the exchange maps onto
    itself (the mirror y -> -y) the odd transition dipole is perpendicular to the mirror (along y) and the even ones lie
    in it, as selection rules require of states of different and equal symmetry, although the network is untrained."""
    net = small_network(head="diabatic-symmetric", diabatic_dipoles=True)
    swapped = GEOMETRY[torch.tensor([0, 1, 3, 2, 5, 4])]
    base = net(molecule_batch(GEOMETRY), forces=None)["diabatic_dipoles"][0]  # (Pd, 3): 00 01 02 11 12 22
    moved = net(molecule_batch(swapped), forces=None)["diabatic_dipoles"][0]
    parity = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, 1.0], dtype=torch.float64)[:, None]
    torch.testing.assert_close(moved, parity * base, atol=1e-12, rtol=0)
    assert base[4].norm() > 1e-4
    planar = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.5], [0.0, 1.8, -1.0], [0.0, -1.8, -1.0], [0.0, 1.7, 3.4],
                           [0.0, -1.7, 3.4]], dtype=torch.float64)
    rotation = torch.tensor(Rotation.random(random_state=8).as_matrix())
    dipoles = net(molecule_batch(planar @ rotation.T + 0.4), forces=None)["diabatic_dipoles"][0] @ rotation  # back
    assert dipoles[4, [0, 2]].abs().max() < 1e-12 and dipoles[4, 1].abs() > 1e-4
    assert dipoles[[0, 1, 2, 3, 5], 1].abs().max() < 1e-12


def test_declared_exchange_is_checked_against_the_molecule_and_states() -> None:
    """Swapping atoms of different elements, an atom outside the molecule, a state pair that does not exist, or a
    symmetry without indexed couplings: each a ConfigurationError naming the field."""
    from exsnn.errors import ConfigurationError

    cases = [(dict(exchange=[[0, 1]]), "exchange"), (dict(exchange=[[2, 9]]), "exchange"),
             (dict(exchange=[[2, 3]], odd_couplings=[[1, 3]]), "odd_couplings"),
             (dict(exchange=[[2, 3]], odd_couplings=[[2, 1]]), "odd_couplings"),
             (dict(exchange=[[2, 3]], indexed_couplings=False, molecule=[]), "exchange"),
             (dict(odd_couplings=[[1, 2]]), "exchange")]
    for change, where in cases:
        values = dict(head="diabatic", indexed_couplings=True, molecule=[6, 7, 1, 1, 1, 1], n_states=3)
        values.update(change)
        with pytest.raises(ConfigurationError) as caught:
            MultiStateNetwork(NetworkConfig(**values))
        assert caught.value.where == where, (change, str(caught.value))


def test_diabatic_model_potential_gives_state_vectors_for_sign_tracking(tmp_path: Path) -> None:
    """A diabatic-head model gives its eigenvectors as state_vectors (the engine then tracks state signs by their
    overlaps), the same as the network's own eigenvectors, with the NACs those eigenvectors give."""
    from exsnn.model.potential import ModelPotential
    from exsnn.model.training import save_network

    for head in ("adiabatic", "diabatic"):
        net = small_network(dipoles=False, head=head)
        net.config.elements = [1, 6, 7]
        save_network(net, tmp_path / f"{head}.pt")
    positions = torch.stack([GEOMETRY, GEOMETRY * 1.03])
    numbers = np.array([6, 7, 1, 1, 1, 1])
    assert ModelPotential(tmp_path / "adiabatic.pt", numbers).compute(positions, torch.tensor([2, 1])).state_vectors is None
    out = ModelPotential(tmp_path / "diabatic.pt", numbers).compute(positions, torch.tensor([2, 1]))
    vectors = out.state_vectors
    assert vectors is not None and vectors.shape == (2, 3, 3) and vectors.dtype == torch.float64
    torch.testing.assert_close(vectors.transpose(1, 2) @ vectors, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    broken = ModelPotential(tmp_path / "diabatic.pt", numbers).compute(positions.clone().index_fill_(0, torch.tensor([1]), torch.nan))
    assert torch.isfinite(broken.energies[0]).all() and torch.isnan(broken.energies[1]).all()  # NaN rows, no exception
    net = small_network(dipoles=False, head="diabatic")
    raw = net(molecule_batch(GEOMETRY), forces=None)
    torch.testing.assert_close(raw["state_vectors"][0], vectors[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(raw["nacs"], out.nacs[0].permute(1, 0, 2), atol=1e-12, rtol=0)


@pytest.fixture(scope="module")
def lvc_dataset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 Wigner samples (at 3x the harmonic spread) of the SO2 LVC model with exact energies, forces, NACs."""
    potential = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    reference, masses, frequencies, modes = potential.harmonic_modes()
    positions, _ = wigner_harmonic(reference, masses, frequencies / 9.0, modes, 400, seed=5)
    path = tmp_path_factory.mktemp("lvc") / "so2_lvc.h5"
    append_frames(
        path, label_frames(potential, positions, {"source": "wigner"}), DatasetMetadata(n_states=3, method="LVC")
    )
    return path


def test_phase_free_loss_ignores_consistent_flips_only(lvc_dataset: Path) -> None:
    net = small_network(dipoles=False)
    batch = ExcitedStateTorchDataset(lvc_dataset, cutoff=8.0, dtype=torch.float64).__getitems__(list(range(6)))
    # LVC couples only S1-S2, so pairs 01 and 02 vanish; use generic couplings where every pair matters
    batch["nacs"] = torch.randn(batch["nacs"].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = net(batch, forces="all")
    reference, _ = compute_loss(out, batch, LossWeights(), LabelScales(nacs=0.05))
    flipped = dict(batch)
    state_signs = torch.tensor(
        [[1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1], [1, -1, 1], [1, 1, -1]], dtype=torch.float64
    )
    pair = torch.stack(
        [
            state_signs[:, 0] * state_signs[:, 1],
            state_signs[:, 0] * state_signs[:, 2],
            state_signs[:, 1] * state_signs[:, 2],
        ],
        1,
    )
    flipped["nacs"] = batch["nacs"] * pair[batch[structure.idx_m]][:, :, None]
    same, _ = compute_loss(out, flipped, LossWeights(), LabelScales(nacs=0.05))
    torch.testing.assert_close(same, reference, atol=1e-12, rtol=1e-10)
    broken = dict(batch)
    broken["nacs"] = batch["nacs"].clone()
    broken["nacs"][batch[structure.idx_m] == 0, 2] *= -1  # pair 12 alone in sample 0: no state-sign vector does this
    changed, _ = compute_loss(out, broken, LossWeights(), LabelScales(nacs=0.05))
    assert abs(changed.item() - reference.item()) > 1e-6


def test_gap_loss_sees_state_spacing_not_common_shifts(lvc_dataset: Path) -> None:
    """The gap term penalises errors of E_(i+1) - E_i only: a shift of all states together leaves it unchanged, and its
    value is the mean squared error of the adjacent gaps over the gap scale squared."""
    net = small_network(dipoles=False)
    batch = ExcitedStateTorchDataset(lvc_dataset, cutoff=8.0, dtype=torch.float64).__getitems__(list(range(6)))
    out = net(batch, forces="all")
    weights, scales = LossWeights(gaps=2.0), LabelScales(gaps=0.01)
    _, parts = compute_loss(out, batch, weights, scales)
    error = out["energies"] - batch["energies"]
    expected = ((error[:, 1:] - error[:, :-1]) ** 2).mean() / 0.01**2
    torch.testing.assert_close(parts["gaps"], expected)
    shifted = dict(batch)
    shifted["energies"] = batch["energies"] + 0.3
    _, moved = compute_loss(out, shifted, weights, scales)
    torch.testing.assert_close(moved["gaps"], parts["gaps"])
    assert moved["energies"] > parts["energies"]
    assert "gaps" not in compute_loss(out, batch, LossWeights(), scales)[1]  # off unless weighted


def test_small_gap_loss_weighs_gap_errors_by_the_gap() -> None:
    """The relative gap term: zero for a common shift of all states, the same gap error costs more where the reference
    gap is small (0.1 eV) than where it is large (3 eV), and it is (error / (|gap| + 0.05 eV))^2 averaged."""
    from exsnn.model.loss import SMALL_GAP_FLOOR

    ev = 1 / 27.211386
    reference = torch.tensor([[0.0, 0.1 * ev, 3.1 * ev]], dtype=torch.float64)  # gaps 0.1 and 3 eV
    no = torch.tensor([False])
    batch = {"energies": reference, "energies_mask": torch.tensor([True]), "nacs_mask": no, "dipoles_mask": no,
             structure.idx_m: torch.zeros(1, dtype=torch.long)}
    weights, scales = LossWeights(small_gaps=1.0), LabelScales()

    def part(predicted: torch.Tensor) -> torch.Tensor:
        return compute_loss({"energies": predicted}, batch, weights, scales)[1]["small_gaps"]

    assert part(reference + 0.2).abs() < 1e-20
    low = part(reference + torch.tensor([[0.0, 0.03 * ev, 0.03 * ev]], dtype=torch.float64))  # the 0.1 eV gap off by 30 meV
    high = part(reference + torch.tensor([[0.0, 0.0, 0.03 * ev]], dtype=torch.float64))  # the 3 eV gap off by 30 meV
    assert low > 100 * high
    torch.testing.assert_close(low, torch.tensor((0.03 * ev / (0.1 * ev + SMALL_GAP_FLOOR)) ** 2 / 2, dtype=torch.float64))
    assert "small_gaps" not in compute_loss({"energies": reference}, batch, LossWeights(), scales)[1]


def test_energy_window_weighs_states_far_above_the_cap_less_in_every_term(lvc_dataset: Path) -> None:
    """A state e above the cap counts 1 / (1 + (e / width)^2) in the energy, force and coupling terms (a pair: the
    smaller of its states' weights); below the cap nothing changes, and without a window the loss is the plain one."""
    net = small_network(dipoles=False)
    batch = ExcitedStateTorchDataset(lvc_dataset, cutoff=8.0, dtype=torch.float64).__getitems__(list(range(6)))
    out = net(batch, forces="all")
    weights, scales = LossWeights(gaps=1.0), LabelScales(nacs=0.05, gaps=0.01)
    plain, plain_parts = compute_loss(out, batch, weights, scales)
    far_below = EnergyWindow(cap=float(batch["energies"].max()) + 1.0, width=0.01)
    same, _ = compute_loss(out, batch, weights, scales, far_below)
    torch.testing.assert_close(same, plain)
    # cap between S0 and S1 of every frame: S1 and S2 fade, pairs 01, 02, 12 take the weight of their upper state
    cap, width = float(batch["energies"][:, 0].max()), 0.02
    window = EnergyWindow(cap=cap, width=width)
    _, parts = compute_loss(out, batch, weights, scales, window)
    w = 1 / (1 + ((batch["energies"] - cap).clamp_min(0) / width) ** 2)
    assert bool((w[:, 0] == 1).all()) and bool((w[:, 1:] < 1).all())
    error = out["energies"] - batch["energies"]
    torch.testing.assert_close(parts["energies"], (w * error**2).mean() / scales.energies**2)
    atoms = batch[structure.idx_m]
    torch.testing.assert_close(parts["forces"], (((out["forces"] - batch["forces"]) ** 2) * w[atoms][:, :, None]).mean())
    gap_w = torch.minimum(w[:, 1:], w[:, :-1])
    torch.testing.assert_close(parts["gaps"], (gap_w * (error[:, 1:] - error[:, :-1]) ** 2).mean() / 0.01**2)
    assert parts["couplings"] < plain_parts["couplings"]
    torch.testing.assert_close(pair_weights(w), torch.stack([w[:, 1], w[:, 2], torch.minimum(w[:, 1], w[:, 2])], 1))


def test_energy_cap_is_taken_above_the_lowest_training_energy_and_needs_one_molecule(tmp_path: Path) -> None:
    """energy_cap_ev is relative to the training frames' lowest energy; a dataset of two molecules has no common
    energy scale: DataError naming the file and frame."""
    from exsnn.model.training import TrainingConfig, energy_window

    single, mixed = tmp_path / "one.h5", tmp_path / "two.h5"
    energies = [[-1.0, -0.9], [-1.2, -0.8]]
    frames = [Frame(numbers=np.array([1, 1]), positions=np.array([[0, 0, 0], [0, 0, 1.4 + 0.1 * k]]),
                    energies=np.array(e)) for k, e in enumerate(energies)]
    append_frames(single, frames, DatasetMetadata(n_states=2))
    other = Frame(numbers=np.array([1, 8]), positions=np.array([[0, 0, 0], [0, 0, 1.8]]), energies=np.array([-75.0, -74.8]))
    append_frames(mixed, [*frames, other], DatasetMetadata(n_states=2))
    window = energy_window(TrainingConfig(data=str(single), output="-", energy_cap_ev=2.0, energy_cap_width_ev=0.5),
                           np.array([0, 1]))
    assert window is not None
    assert window.cap == pytest.approx(-1.2 + 2.0 / 27.211386, rel=1e-6) and window.width == pytest.approx(0.5 / 27.211386, rel=1e-6)
    assert energy_window(TrainingConfig(data=str(single), output="-"), np.array([0, 1])) is None
    with pytest.raises(DataError) as error:
        energy_window(TrainingConfig(data=str(mixed), output="-", energy_cap_ev=2.0), np.array([0, 1, 2]))
    assert "frame 2" in str(error.value) and "energy cap" in str(error.value)


def test_diabatic_coupling_loss_penalises_off_diagonal_hamiltonian_elements() -> None:
    """The diabatic-coupling term is the mean squared off-diagonal element of H over the energy scale squared (the
    diagonal does not enter), off unless weighted, and its gradient reaches the network's Hamiltonian head."""
    network = small_network(head="diabatic")
    batch = molecule_batch(GEOMETRY)
    out = network(batch, forces=None, create_graph=True)  # as in training
    no = torch.tensor([False])
    labels = {"energies": out["energies"].detach(), "energies_mask": torch.tensor([True]), "nacs_mask": no,
              "dipoles_mask": no, structure.idx_m: batch[structure.idx_m]}
    scales = LabelScales(energies=0.5)
    total, parts = compute_loss(out, labels, LossWeights(energies=0.0, diabatic_couplings=2.0), scales)
    h = out["hamiltonian"][0]
    expected = torch.stack([h[0, 1], h[0, 2], h[1, 2]]).pow(2).mean() / 0.5**2
    torch.testing.assert_close(parts["diabatic_couplings"], expected)
    torch.testing.assert_close(total, 2.0 * expected)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.hamiltonian_head.parameters())
    assert "diabatic_couplings" not in compute_loss(out, labels, LossWeights(), scales)[1]


def exsnn(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True)


def assert_drives_surface_hopping(model: Path, geometries: Path, tmp_path: Path) -> None:
    """`exsnn dynamics` runs 4 trajectories for 4 steps on `model` from frames of the dataset `geometries`."""
    config = tmp_path / "ml.toml"
    config.write_text(
        f'[potential]\nspec = "model:{model}"\n[initial_conditions]\nsampling = "file"\nfile = "{geometries}"\n'
        'n_trajectories = 4\ninitial_state = 2\n[integrator]\ndt_fs = 0.5\nduration_fs = 2.0\n[output]\nfile = "ml.h5"\n'
    )
    dynamics = exsnn("dynamics", config, "--json", "--no-progress")
    assert dynamics.returncode == 0, dynamics.stderr
    assert json.loads(dynamics.stdout)["steps"] == 4


def test_training_checkpoints_resume_and_model_potential(lvc_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ("--width", 16, "--interactions", 1, "--batch-size", 32, "--threads", 1, "--no-progress", "--cutoff", 8.0)
    first = exsnn("train", lvc_dataset, "-o", out, "--epochs", 2, *common)
    assert first.returncode == 0, first.stderr
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "model.pt").exists()
    assert (out / "learning_curve.png").exists() and "energies" in (out / "test_errors.txt").read_text()
    resumed = exsnn("train", lvc_dataset, "-o", out, "--epochs", 4, *common)
    assert resumed.returncode == 0, resumed.stderr
    epochs = []
    for part in sorted((out / "logs").glob("metrics*.csv")):
        with open(part) as handle:
            epochs += [int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val_loss")]
    epochs.sort()
    assert epochs == [0, 1, 2, 3]  # continued from the checkpoint, did not start over
    evaluated = exsnn("evaluate", out, lvc_dataset, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    table = next(iter(json.loads(evaluated.stdout).values()))
    assert set(table) >= {"energies", "forces", "nacs", "smooth_nacs", "sign_vectors_chosen"}
    xyz = tmp_path / "so2.xyz"
    xyz.write_text("3\nSO2\nS 0.0 0.0 0.0\nO 0.0 -1.26 0.72\nO 0.0 1.26 0.74\n")
    point = exsnn("point", "--potential", f"model:{out}", xyz, "--json")
    assert point.returncode == 0, point.stderr
    frame = json.loads(point.stdout)[0]
    assert (
        np.shape(frame["energies"]) == (3,)
        and np.shape(frame["gradients"]) == (3, 3, 3)
        and np.shape(frame["nacs"]) == (3, 3, 3)
    )
    # the trained model drives surface hopping (geometries from the dataset itself)
    assert_drives_surface_hopping(out, lvc_dataset, tmp_path)


def test_checkpoint_metric_keeps_the_epoch_with_the_best_validation_energies_and_forces(lvc_dataset: Path,
                                                                                        tmp_path: Path) -> None:
    """--checkpoint-metric energies_forces keeps the epoch whose weighted validation energy + force terms are lowest
    (what the dynamics runs on), whatever the other terms did; an unknown metric is a ConfigurationError."""
    from exsnn.model.training import TrainingConfig

    out = tmp_path / "run"
    result = exsnn("train", lvc_dataset, "-o", out, "--epochs", 6, "--width", 16, "--interactions", 1, "--batch-size", 8,
                   "--threads", 1, "--no-progress", "--cutoff", 8.0, "--dipoles", "--checkpoint-metric", "energies_forces",
                   "--force-weight", 3)
    assert result.returncode == 0, result.stderr
    with open(out / "logs" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val_energies_forces")]
    values = np.array([float(row["val_energies_forces"]) for row in rows])
    parts = np.array([float(row["val_energies"]) + 3 * float(row["val_forces"]) for row in rows])
    np.testing.assert_allclose(values, parts, rtol=1e-5)
    kept = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["epoch"]
    assert kept == int(rows[int(np.argmin(values))]["epoch"])
    with pytest.raises(ConfigurationError) as caught:
        TrainingConfig(data="d.h5", output="o", checkpoint_metric="dipoles")
    assert caught.value.where == "checkpoint_metric"


def test_checkpoint_metric_last_keeps_the_final_weights_and_runs_the_whole_budget(lvc_dataset: Path, tmp_path: Path) -> None:
    """--checkpoint-metric last keeps the weights of the final step (model.pt holds last.ckpt's network), runs every
    epoch of the budget whatever the recipe's early-stopping patience, and refuses an explicit patience (exit 2, the
    option named, nothing written)."""
    out = tmp_path / "run"
    common = ("--epochs", 5, "--width", 16, "--interactions", 1, "--batch-size", 8, "--threads", 1, "--no-progress",
              "--cutoff", 8.0, "--checkpoint-metric", "last", "--lr", 0.02, "--schedule", "none")
    refused = exsnn("train", lvc_dataset, "-o", tmp_path / "refused", *common, "--patience", 3)
    assert refused.returncode == 2 and "patience" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()
    result = exsnn("train", lvc_dataset, "-o", out, *common)
    assert result.returncode == 0, result.stderr
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 4  # 0-based: all five epochs ran
    kept = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    final = {name.removeprefix("network."): value for name, value in last["state_dict"].items() if name.startswith("network.")}
    assert kept.keys() == final.keys()
    assert all(torch.equal(kept[name], final[name]) for name in kept)
    # and not the best validation epoch, which this run (a learning rate too high to settle: with torch 2.14 and
    # Lightning 2.6 the validation loss went 1.25, 1.05, 0.98, 0.59, 0.70; at 0.05 it ended at its lowest) had earlier
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] < 4 and not all(torch.equal(kept[name], best["state_dict"]["network." + name]) for name in kept)


@pytest.mark.filterwarnings("ignore:.*short_distance:exsnn.errors.ExsnnWarning")  # the far data is meant to be far
def test_warm_start_continues_the_saved_model_on_data_with_other_statistics(shared_data: Path, lvc_dataset: Path,
                                                                            tmp_path: Path) -> None:
    """A warm-started network computes the saved model's function before its first step and keeps its loss scales,
    even when the new data (here five times farther out) would give other label statistics."""
    from exsnn.data import read_frames
    from exsnn.model.network import ArchitectureConfig
    from exsnn.model.potential import ModelPotential
    from exsnn.model.training import MODEL_FILE, TrainingConfig, label_scales, train

    potential = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    reference, masses, frequencies, modes = potential.harmonic_modes()
    positions, _ = wigner_harmonic(reference, masses, frequencies / 225.0, modes, 40, seed=6)
    far = tmp_path / "far.h5"
    append_frames(far, label_frames(potential, positions, {"source": "wigner"}), DatasetMetadata(n_states=3, method="LVC"))
    common = dict(network=ArchitectureConfig(n_atom_basis=8, n_interactions=1, cutoff=8.0), batch_size=32,
                  progress_bar=False, threads=1)
    train(TrainingConfig(data=str(lvc_dataset), output=str(tmp_path / "first"), max_epochs=1, **common))
    first = torch.load(tmp_path / "first" / MODEL_FILE, weights_only=False)
    far_scales = label_scales(str(far), np.arange(40))[0]
    assert far_scales.energies > 3 * first["scales"]["energies"]  # the far data would rescale the loss
    # a learning rate of 1e-12: the continued model is the start model to within round-off
    train(TrainingConfig(data=str(far), output=str(tmp_path / "second"), max_epochs=1, learning_rate=1e-12,
                         init_from=str(tmp_path / "first" / MODEL_FILE), **common))
    second = torch.load(tmp_path / "second" / MODEL_FILE, weights_only=False)
    assert second["scales"] == first["scales"]
    numbers = read_frames(far).frame(0).numbers
    geometries = torch.as_tensor(positions[:8])
    before = ModelPotential(tmp_path / "first", numbers, dtype=torch.float64).compute(geometries)
    after = ModelPotential(tmp_path / "second", numbers, dtype=torch.float64).compute(geometries)
    torch.testing.assert_close(after.energies, before.energies, atol=1e-7, rtol=0)
    torch.testing.assert_close(after.forces, before.forces, atol=1e-6, rtol=0)


def test_dipole_head_trains_on_ch2nh2_dipoles(shared_data: Path, tmp_path: Path) -> None:
    from conftest import CH2NH2_FILES

    data = tmp_path / "ch2nh2.h5"
    assert exsnn("data", "import", CH2NH2_FILES["spainn"], data).returncode == 0
    result = exsnn(
        "train",
        data,
        "-o",
        tmp_path / "dip",
        "--dipoles",
        "--epochs",
        1,
        "--width",
        8,
        "--interactions",
        1,
        "--threads",
        1,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "dip" / "test_errors.json").read_text())
    assert set(table["dipoles"]["mae"]) == {"00", "01", "02", "11", "12", "22"}


@pytest.mark.slow
def test_training_beats_the_mean_predictor(lvc_dataset: Path, tmp_path: Path) -> None:
    from exsnn.data import read_frames
    from exsnn.model.network import ArchitectureConfig
    from exsnn.model.training import TrainingConfig, train

    result = train(
        TrainingConfig(
            data=str(lvc_dataset),
            output=str(tmp_path / "fit"),
            network=ArchitectureConfig(n_atom_basis=32, n_interactions=2, cutoff=8.0),
            max_epochs=60,
            batch_size=16,
            learning_rate=1e-3,
            progress_bar=False,
            threads=1,
        )
    )
    test_idx = np.load(tmp_path / "fit" / "split.npz")["test_idx"]
    energies = read_frames(lvc_dataset).energies
    mean_predictor = np.abs(energies[test_idx] - energies.mean(0)).mean(0) * 27211.386  # meV
    model_mae = np.array(list(result["test_errors"]["energies"]["mae"].values()))
    assert np.all(model_mae < 0.2 * mean_predictor), (model_mae, mean_predictor)


def test_committee_potential_and_ase_calculator(lvc_dataset: Path, tmp_path: Path) -> None:
    from ase import Atoms

    from exsnn.model.ase_calculator import ExsnnCalculator
    from exsnn.model.potential import ModelPotential
    from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV

    out = tmp_path / "committee"
    result = exsnn(
        "train",
        lvc_dataset,
        "-o",
        out,
        "--committee",
        2,
        "--epochs",
        1,
        "--width",
        8,
        "--interactions",
        1,
        "--threads",
        1,
        "--no-progress",
        "--cutoff",
        8.0,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "member_0" / "model.pt").exists() and (out / "member_1" / "model.pt").exists()
    numbers = np.array([16, 8, 8])
    committee = ModelPotential(out, numbers, dtype=torch.float64)
    member = ModelPotential(out / "member_0", numbers, dtype=torch.float64)
    positions = torch.tensor([[[0.0, 0.0, 0.0], [0.0, -2.38, 1.36], [0.0, 2.38, 1.36]]], dtype=torch.float64)
    mean = committee.compute(positions, states=torch.tensor([1]), nacs=True)
    assert len(committee.networks) == 2 and committee.last_disagreement["energies"].shape == (1, 3)
    assert committee.last_disagreement["energies"].abs().sum() > 0  # different seeds disagree
    assert mean.nacs.shape == (1, 3, 3, 3)
    # a member whose S0 comes out with the opposite phase (couplings 01 and 02 negated) must not cancel the
    # other member: members are aligned by the best consistent state-sign vector before averaging
    import copy

    single = member.compute(positions, nacs=True).nacs
    flipped = copy.deepcopy(member.networks[0])
    with torch.no_grad():  # negate output channels 0 and 1 (and their gating twins; the gate uses their norm)
        flipped.nac_head[-1].mix_vectors.weight[[0, 1, 3, 4]] *= -1
    twin = ModelPotential(out / "member_0", numbers, dtype=torch.float64)
    twin.networks.append(flipped)
    flipped_nacs = flipped(twin.batch(positions), forces=None)["nacs"].reshape(1, 3, 3, 3).permute(0, 2, 1, 3)
    torch.testing.assert_close(
        flipped_nacs, single * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)[None, :, None, None]
    )
    torch.testing.assert_close(twin.compute(positions, nacs=True).nacs, single)
    atoms = Atoms(numbers=numbers, positions=positions[0].numpy() / ANGSTROM_IN_BOHR)
    atoms.calc = ExsnnCalculator(out / "member_0", state=1)
    # the calculator runs the network as trained (float32): compare with that, not with the float64 copy above
    as_trained = ModelPotential(out / "member_0", numbers)
    direct = as_trained.compute(positions, states=torch.tensor([1]), all_forces=True)
    assert atoms.get_potential_energy() == pytest.approx(direct.energies[0, 1].item() * HARTREE_IN_EV)
    np.testing.assert_allclose(
        atoms.get_forces(), direct.forces[0].numpy() * HARTREE_IN_EV * ANGSTROM_IN_BOHR, rtol=1e-5, atol=1e-8
    )


def test_diabatic_indexed_model_trains_drives_dynamics_and_refuses_another_atom_order(lvc_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "diabatic"
    trained = exsnn("train", lvc_dataset, "-o", out, "--epochs", 2, "--width", 16, "--interactions", 1, "--batch-size", 32,
                    "--threads", 1, "--no-progress", "--cutoff", 8.0, "--head", "diabatic", "--indexed-couplings")
    assert trained.returncode == 0, trained.stderr
    stored = torch.load(out / "model.pt", weights_only=False)["network"]
    assert stored["head"] == "diabatic" and stored["indexed_couplings"] and stored["molecule"] == [16, 8, 8]
    xyz = tmp_path / "so2.xyz"
    xyz.write_text("3\nSO2\nS 0.0 0.0 0.0\nO 0.0 -1.26 0.72\nO 0.0 1.26 0.74\n")
    point = exsnn("point", "--potential", f"model:{out}", xyz, "--json")
    assert point.returncode == 0, point.stderr
    assert np.shape(json.loads(point.stdout)[0]["nacs"]) == (3, 3, 3)
    reordered = tmp_path / "os2.xyz"
    reordered.write_text("3\nOSO\nO 0.0 -1.26 0.72\nS 0.0 0.0 0.0\nO 0.0 1.26 0.74\n")
    refused = exsnn("point", "--potential", f"model:{out}", reordered, "--json")
    assert refused.returncode == 2 and "atom order" in refused.stderr and "Traceback" not in refused.stderr
    assert_drives_surface_hopping(out, lvc_dataset, tmp_path)
