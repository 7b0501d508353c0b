"""Torch datasets: SchNetPack-style batches, correct neighbour lists, reproducible splits, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import schnetpack.properties as structure
import torch
from conftest import H2O_DATASET

from exsnn.data import FrameArrays, append_frames
from exsnn.data.importers import import_file
from exsnn.data.splits import load_split, split_indices, state_statistics
from exsnn.data.torch_data import ExcitedStateDataModule, ExcitedStateTorchDataset, batch_loader, neighbour_pairs


def h2o_file(tmp_path: Path) -> Path:
    imported = import_file(H2O_DATASET)
    path = tmp_path / "h2o.h5"
    append_frames(path, imported.frames, imported.metadata)
    return path


def test_neighbour_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    sizes = [3, 7, 1, 5]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    positions = rng.uniform(0, 6, size=(offsets[-1], 3))
    idx_i, idx_j = neighbour_pairs(positions, offsets, cutoff=4.0)
    expected = set()
    for s in range(len(sizes)):
        for i in range(offsets[s], offsets[s + 1]):
            for j in range(offsets[s], offsets[s + 1]):
                if i != j and np.linalg.norm(positions[i] - positions[j]) < 4.0:
                    expected.add((i, j))
    assert set(zip(idx_i.tolist(), idx_j.tolist())) == expected and len(idx_i) == len(expected)


def test_batches_hold_the_frames_asked_for(tmp_path: Path) -> None:
    path = h2o_file(tmp_path)
    arrays = import_file(H2O_DATASET)
    for in_memory in (True, False):
        dataset = ExcitedStateTorchDataset(path, cutoff=10.0, indices=[5, 1, 9], in_memory=in_memory, dtype=torch.float64)
        batch = dataset.__getitems__([2, 0])
        assert batch[structure.idx].tolist() == [9, 5]
        assert batch[structure.n_atoms].tolist() == [3, 3]
        assert batch[structure.idx_m].tolist() == [0, 0, 0, 1, 1, 1]
        np.testing.assert_array_equal(batch[structure.R][3:].numpy(), arrays.frames[5].positions)
        np.testing.assert_array_equal(batch["energies"][0].numpy(), arrays.frames[9].energies)
        np.testing.assert_array_equal(batch["forces"][:3].numpy(), arrays.frames[9].forces)
        assert batch["forces_mask"].all() and not batch["nacs_mask"].any()
        assert torch.count_nonzero(batch["nacs"]) == 0  # absent labels are zero, never NaN
        assert set(zip(batch[structure.idx_i].tolist(), batch[structure.idx_j].tolist())) == {
            (i, j) for s in (0, 3) for i in range(s, s + 3) for j in range(s, s + 3) if i != j
        }


def test_loader_shuffles_reproducibly(tmp_path: Path) -> None:
    dataset = ExcitedStateTorchDataset(h2o_file(tmp_path))
    order = lambda seed: torch.cat([b[structure.idx] for b in batch_loader(dataset, 5, True, seed)]).tolist()  # noqa: E731
    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == list(range(24))


def test_split_is_reproducible_disjoint_and_saved(tmp_path: Path) -> None:
    a, b = split_indices(99, (0.8, 0.1, 0.1), seed=4), split_indices(99, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "val", "test")] == [81, 9, 9]
    assert len(np.unique(np.concatenate(list(a.values())))) == 99
    assert not np.array_equal(split_indices(99, (0.8, 0.1, 0.1), seed=5)["test"], a["test"])
    path = h2o_file(tmp_path)
    module = ExcitedStateDataModule(path, batch_size=4, split_sizes=(16, 4, 4), seed=7, split_file=tmp_path / "split.npz")
    module.setup()
    saved = load_split(tmp_path / "split.npz")
    assert all(np.array_equal(saved[k], module.split[k]) for k in saved)
    assert sum(len(b[structure.idx]) for b in module.train_dataloader()) == 16


def test_state_statistics_per_state() -> None:
    imported = import_file(H2O_DATASET)
    arrays = FrameArrays.from_frames(imported.frames, 3)
    stats = state_statistics(arrays, np.arange(10))
    per_atom = arrays.energies[:10] / 3
    np.testing.assert_allclose(stats["energy_per_atom_mean"], per_atom.mean(axis=0))
    np.testing.assert_allclose(stats["energy_per_atom_std"], per_atom.std(axis=0))
    assert stats["excitation_mean"][0] == 0 and np.all(stats["excitation_mean"][1:] > 0.3)
