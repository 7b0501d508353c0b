"""Seam loops (exsnn.data.seam_loops) and the seam-loop training term (exsnn.model.seam_loss) against exact answers:
the mixing angles of a two-state model whose diabatic states cross (they turn by pi around the loop) or touch (they
come back), and the term's value, sign freedom and gradient on exact state vectors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_geometric_phase import TwoStatePlane

from exsnn.analysis.geometric_phase import loop_positions
from exsnn.data import DatasetMetadata, Frame, append_frames, read_frames
from exsnn.data.seam_loops import SEAM_LOOP, loop_angles, read_seam_loops
from exsnn.errors import DataError, ExsnnWarning
from exsnn.model.seam_loss import seam_loop_loss

PHI = 2 * np.pi * np.arange(16) / 16


def rotation(theta: np.ndarray) -> torch.Tensor:
    """State vectors (K, 2, 2), columns the states, of a two-state mixing by angles theta (K,)."""
    c, s = np.cos(theta), np.sin(theta)
    return torch.as_tensor(np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2))


def crossing_angles() -> np.ndarray:
    return PHI / 2  # the mixing angle turns by pi around the intersection


def touching_angles() -> np.ndarray:
    return 0.5 * np.arctan2(np.sin(PHI), np.abs(np.cos(PHI)))  # the diagonal difference never changes sign: back to 0


def target(theta: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.cos(theta[:, None] - theta[None, :]) ** 2)


def test_the_term_is_zero_for_the_reference_states_whatever_their_signs_and_pulls_touching_ones() -> None:
    crossing = target(crossing_angles())
    assert float(seam_loop_loss(rotation(crossing_angles()), (0, 1), crossing)) == pytest.approx(0.0, abs=1e-12)
    flips = torch.as_tensor(np.random.default_rng(1).choice([-1.0, 1.0], size=(16, 1, 2)))
    assert float(seam_loop_loss(rotation(crossing_angles()) * flips, (0, 1), crossing)) == pytest.approx(0.0, abs=1e-12)
    # touching states on the same loop: the two are told apart (sign-free couplings and energies cannot)
    theta = torch.tensor(touching_angles(), requires_grad=True)
    c, s = torch.cos(theta), torch.sin(theta)
    vectors = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    loss = seam_loop_loss(vectors, (0, 1), crossing)
    assert float(loss.detach()) > 0.05
    loss.backward()
    assert theta.grad is not None and float(theta.grad.abs().max()) > 1e-3  # a gradient towards the crossing kind


def labelled_loop(touching: bool, points: int = 16, skip: int | None = None) -> list[Frame]:
    """Frames of TwoStatePlane's labels on a loop of radius 0.2 Bohr about the origin, tagged as seam-loop points."""
    potential = TwoStatePlane(touching=touching)
    positions = loop_positions(np.zeros((1, 3)), np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]), 0.2, points)
    out = potential.compute(torch.as_tensor(positions), all_forces=True, nacs=True)
    flips = np.random.default_rng(2).choice([-1.0, 1.0], size=points)  # a code's arbitrary coupling signs
    return [Frame(numbers=np.array([1]), positions=positions[k], energies=out.energies[k].numpy(),
                  forces=out.all_forces[k].permute(1, 0, 2).numpy(),  # type: ignore[union-attr]
                  nacs=flips[k] * out.nacs[k].permute(1, 0, 2).numpy(),  # type: ignore[union-attr]
                  multiplicity=1, provenance={"source": "test", SEAM_LOOP: {"loop": 0, "point": k, "pair": [0, 1]}})
            for k in range(points) if k != skip]


def test_loops_read_from_a_dataset_turn_by_pi_around_an_intersection_and_not_without(tmp_path: Path) -> None:
    metadata = DatasetMetadata(n_states=2, method="two-state plane", program="test")
    for touching, turn in ((False, np.pi), (True, 0.0)):
        path = tmp_path / f"{touching}.h5"
        append_frames(path, labelled_loop(touching), metadata)
        (loop,) = read_seam_loops(path)
        assert loop.pair == (0, 1) and list(loop.frames) == list(range(16))
        assert abs(loop.integral) == pytest.approx(turn, abs=0.1)
        assert np.allclose(np.diag(loop.target), 1.0)
    # the crossing loop's angles halfway round: the states have exchanged character (overlap 0)
    (loop,) = read_seam_loops(tmp_path / "False.h5")
    assert loop.target[0, 8] == pytest.approx(0.0, abs=0.05)
    angles, closure, integral = loop_angles(np.zeros((8, 1, 3)), np.ones((8, 1, 3)))
    assert integral == 0.0 and closure == pytest.approx(1.0) and len(angles) == 9


def test_a_broken_loop_is_refused_with_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    append_frames(path, labelled_loop(False, skip=5), DatasetMetadata(n_states=2, method="two-state plane", program="test"))
    with pytest.raises(DataError, match=r"seam loop 0: needs points 0..K-1"):
        read_seam_loops(path)
    # a loop point the oracle failed on (recorded, unlabelled): the loop is left out with a warning, not an error
    failed = tmp_path / "failed.h5"
    frames = labelled_loop(False)
    frames[3] = Frame(numbers=frames[3].numbers, positions=frames[3].positions, multiplicity=1,
                      provenance={**frames[3].provenance, "failure": "the oracle failed at this structure"})
    append_frames(failed, frames, DatasetMetadata(n_states=2, method="two-state plane", program="test"))
    with pytest.warns(ExsnnWarning, match="seam loop 0: the oracle failed"):
        assert read_seam_loops(failed) == []
    # the whole loop reads, with its points in loop order however they were appended
    shuffled = tmp_path / "shuffled.h5"
    frames = labelled_loop(False)
    append_frames(shuffled, frames[8:] + frames[:8], DatasetMetadata(n_states=2, method="two-state plane", program="test"))
    (loop,) = read_seam_loops(shuffled)
    assert list(loop.frames) == list(range(8, 16)) + list(range(8)) and abs(loop.integral) == pytest.approx(np.pi, abs=0.1)


@pytest.fixture(scope="module")
def so2_with_loop(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 Wigner samples of the SO2 LVC model and a 16-point loop (radius 0.1 Bohr) around its S1/S2 intersection."""
    from exsnn.analysis.geometric_phase import locate_intersection
    from exsnn.dynamics.initial_conditions import wigner_harmonic
    from exsnn.potentials.labelling import label_frames
    from exsnn.potentials.lvc import LVCPotential

    so2 = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    reference, masses, frequencies, modes = so2.harmonic_modes()
    positions, _ = wigner_harmonic(reference, masses, frequencies / 2.25, modes, 60, seed=4)
    found = locate_intersection(so2, np.asarray(positions[0]), (1, 2))
    loop = loop_positions(found.center, *found.plane, 0.1, 16)
    path = tmp_path_factory.mktemp("so2_loop") / "so2.h5"
    frames = label_frames(so2, torch.as_tensor(positions), {"source": "wigner"})
    frames += [Frame(numbers=f.numbers, positions=f.positions, energies=f.energies, forces=f.forces, nacs=f.nacs,
                     multiplicity=1, provenance={"source": "loop", SEAM_LOOP: {"loop": 0, "point": k, "pair": [1, 2]}})
               for k, f in enumerate(label_frames(so2, torch.as_tensor(loop), {"source": "loop"}))]
    append_frames(path, frames, DatasetMetadata(n_states=3, method="LVC"))
    return path


def test_the_term_trains_a_network_s_states_to_turn_around_the_loop(so2_with_loop: Path) -> None:
    """Minimising the term alone through a quasi-diabatic network (its eigenvectors, eigh's backward pass) brings
    the network's states from not turning at all (0.375 for constant states) towards the oracle's turn: the term has a
    working gradient end to end. (A network whose states touch cannot always be pulled across: changing the kind means
    closing the gap on the loop, a barrier the term cannot see through; the campaign retrains such members instead.)"""
    from exsnn.data.torch_data import ExcitedStateTorchDataset
    from exsnn.model.network import MultiStateNetwork, NetworkConfig
    from exsnn.model.seam_loss import loop_batches

    torch.manual_seed(1)
    network = MultiStateNetwork(NetworkConfig(head="diabatic", n_states=3, n_atom_basis=16, n_interactions=2, cutoff=8.0,
                                              elements=[8, 16]))
    (loop,) = loop_batches(ExcitedStateTorchDataset(so2_with_loop, cutoff=8.0), read_seam_loops(so2_with_loop))

    def misfit() -> torch.Tensor:
        return seam_loop_loss(network.predict(loop.batch)["state_vectors"], loop.pair, loop.target)

    before = float(misfit().detach())
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(150):
        optimiser.zero_grad()
        value = misfit()
        value.backward()
        optimiser.step()
    after = float(misfit().detach())
    assert after < 0.6 * before, (before, after)


def test_the_term_without_loops_or_without_the_diabatic_head_is_refused(so2_with_loop: Path, tmp_path: Path) -> None:
    """Asking `exsnn train` for the term without loops in the data, or without the diabatic head, exits 2 before
    anything is written."""
    plain = tmp_path / "plain.h5"
    arrays = read_frames(so2_with_loop)
    append_frames(plain, [arrays.frame(k) for k in range(60)], DatasetMetadata(n_states=3, method="LVC"))
    for data, extra, problem in ((plain, ["--head", "diabatic"], "seam loops"), (so2_with_loop, [], "--seam-loop-weight")):
        result = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "train", str(data), "-o", str(tmp_path / "refused"),
                                 "--seam-loop-weight", "1", "--epochs", "1", *extra], capture_output=True, text=True)
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "refused").exists()
