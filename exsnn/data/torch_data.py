"""PyTorch access to exsnn datasets in SchNetPack's input vocabulary, batched and with neighbour lists.

A batch is one dict (B structures, A atoms, E neighbour pairs, N states, P = N(N-1)/2, Pd = N(N+1)/2):

==================  ===========  =====================================================
key                 shape        meaning (atomic units)
==================  ===========  =====================================================
_idx                (B,)         frame index in the file
_atomic_numbers     (A,)
_positions          (A, 3)       Bohr
_n_atoms            (B,)
_idx_m              (A,)         structure of each atom
_idx_i, _idx_j      (E,)         neighbour pairs within `cutoff` (both directions)
_offsets            (E, 3)       zeros (molecules, no periodic images)
_cell, _pbc         (B, 3, 3), (B, 3)
energies            (B, N)       Hartree
forces              (A, N, 3)    Hartree/Bohr
nacs                (A, P, 3)    1/Bohr
dipoles             (B, Pd, 3)   e*Bohr
<label>_mask        (B,)         True where the frame has the label (absent values are 0)
total_charge        (B,)
spin_multiplicity   (B,)
==================  ===========  =====================================================

The whole batch is built by vectorised indexing in `__getitems__`, which PyTorch's DataLoader calls with the
batch's indices (use `collate_fn=keep_batch`, as `batch_loader` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import schnetpack.properties as structure
import torch
from torch.utils.data import DataLoader, Dataset

from exsnn.data.frame import FrameArrays
from exsnn.data.properties import CHARGE, DIPOLES, ENERGIES, FORCES, LABELS, MULTIPLICITY, NACS
from exsnn.data.splits import SPLIT_NAMES, load_split, save_split, split_indices, state_statistics
from exsnn.data.store import read_frames


def mask_key(label: str) -> str:
    return f"{label}_mask"


@lru_cache(maxsize=256)
def _all_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.nonzero(~np.eye(n_atoms, dtype=bool))
    return i, j


def neighbour_pairs(positions: np.ndarray, atom_offsets: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j), i != j, of atoms of the same structure closer than `cutoff` (Bohr).

    positions (A, 3), atom_offsets (B+1,); returns global atom indices idx_i, idx_j (E,).
    """
    blocks_i, blocks_j = [], []
    for start, stop in zip(atom_offsets[:-1], atom_offsets[1:]):
        i, j = _all_pairs(int(stop - start))
        blocks_i.append(i + start)
        blocks_j.append(j + start)
    idx_i = np.concatenate(blocks_i) if blocks_i else np.zeros(0, np.int64)
    idx_j = np.concatenate(blocks_j) if blocks_j else np.zeros(0, np.int64)
    distances = np.linalg.norm(positions[idx_j] - positions[idx_i], axis=1)
    keep = distances < cutoff
    return idx_i[keep], idx_j[keep]


def keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Collate function for datasets whose `__getitems__` already returns a whole batch."""
    return batch


class ExcitedStateTorchDataset(Dataset):
    """Frames of an exsnn dataset (or of a FrameArrays) as SchNetPack-style batches.

    `indices` restricts the dataset to some frames (e.g. a split); item k is frame indices[k].
    With `in_memory=False` each batch is read from the HDF5 file on demand (for files larger than memory).
    """

    def __init__(
        self,
        source: str | Path | FrameArrays,
        cutoff: float = 10.0,
        indices: Sequence[int] | np.ndarray | None = None,
        in_memory: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.cutoff = cutoff
        self.dtype = dtype
        self.path: Path | None = None
        self.arrays: FrameArrays | None = None
        if isinstance(source, FrameArrays):
            self.arrays = source
            n_frames = source.n_frames
        else:
            self.path = Path(source)
            if in_memory:
                self.arrays = read_frames(self.path)
                n_frames = self.arrays.n_frames
            else:
                from exsnn.data.store import count_frames

                n_frames = count_frames(self.path)
        self.indices = np.arange(n_frames) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, positions_in_dataset: Sequence[int]) -> dict[str, torch.Tensor]:
        frame_ids = self.indices[np.asarray(positions_in_dataset, dtype=np.int64)]
        arrays = self.arrays.select(frame_ids) if self.arrays is not None else read_frames(self.path, frame_ids)  # type: ignore[arg-type]
        return self._to_batch(arrays, frame_ids)

    def _to_batch(self, arrays: FrameArrays, frame_ids: np.ndarray) -> dict[str, torch.Tensor]:
        B = arrays.n_frames
        n_atoms = arrays.n_atoms
        idx_i, idx_j = neighbour_pairs(arrays.positions, arrays.atom_offsets, self.cutoff)
        real = lambda a: torch.from_numpy(np.nan_to_num(a, nan=0.0)).to(self.dtype)  # noqa: E731
        batch: dict[str, torch.Tensor] = {
            structure.idx: torch.from_numpy(frame_ids),
            structure.Z: torch.from_numpy(arrays.numbers.astype(np.int64)),
            structure.R: torch.from_numpy(arrays.positions).to(self.dtype),
            structure.n_atoms: torch.from_numpy(n_atoms),
            structure.idx_m: torch.repeat_interleave(torch.arange(B), torch.from_numpy(n_atoms)),
            structure.idx_i: torch.from_numpy(idx_i),
            structure.idx_j: torch.from_numpy(idx_j),
            structure.offsets: torch.zeros((len(idx_i), 3), dtype=self.dtype),
            structure.cell: torch.zeros((B, 3, 3), dtype=self.dtype),
            structure.pbc: torch.zeros((B, 3), dtype=torch.bool),
            ENERGIES: real(arrays.energies),
            FORCES: real(arrays.forces),
            NACS: real(arrays.nacs),
            DIPOLES: real(arrays.dipoles),
            structure.total_charge: torch.from_numpy(arrays.charge.astype(np.int64)),
            structure.spin_multiplicity: torch.from_numpy(arrays.multiplicity.astype(np.int64)),
        }
        for label in (*LABELS, CHARGE, MULTIPLICITY):
            batch[mask_key(label)] = torch.from_numpy(arrays.masks[label])
        return batch


def batch_loader(dataset: ExcitedStateTorchDataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """A DataLoader that builds each batch in one vectorised call; shuffling is seeded."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=keep_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class ExcitedStateDataModule(pl.LightningDataModule):
    """Lightning data module over one exsnn dataset: seeded split (saved to `split_file` and reused if present),
    batched loaders, per-state statistics of the training split."""

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 32,
        split_sizes: Sequence[float | int] = (0.8, 0.1, 0.1),
        seed: int = 0,
        cutoff: float = 10.0,
        split_file: str | Path | None = None,
        num_workers: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.batch_size = batch_size
        self.split_sizes = tuple(split_sizes)
        self.seed = seed
        self.cutoff = cutoff
        self.split_file = Path(split_file) if split_file is not None else None
        self.num_workers = num_workers
        self.dtype = dtype
        self.split: dict[str, np.ndarray] = {}
        self.statistics: dict[str, np.ndarray] = {}
        self.datasets: dict[str, ExcitedStateTorchDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        arrays = read_frames(self.path)
        if self.split_file is not None and self.split_file.exists():
            self.split = load_split(self.split_file)
        else:
            self.split = split_indices(arrays.n_frames, self.split_sizes, self.seed)
            if self.split_file is not None:
                save_split(self.split, self.split_file)
        self.statistics = state_statistics(arrays, self.split["train"])
        self.datasets = {
            name: ExcitedStateTorchDataset(arrays, self.cutoff, self.split[name], dtype=self.dtype) for name in SPLIT_NAMES
        }

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return batch_loader(self.datasets[name], self.batch_size, shuffle, self.seed, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


__all__: list[Any] = ["ExcitedStateDataModule", "ExcitedStateTorchDataset", "batch_loader", "mask_key", "neighbour_pairs"]
