"""Reproducible train/validation/test splits and per-state label statistics."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from exsnn.data.frame import FrameArrays
from exsnn.data.properties import ENERGIES
from exsnn.errors import ConfigurationError, DataError

SPLIT_NAMES = ("train", "val", "test")


def split_indices(n_frames: int, sizes: Sequence[float | int] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Shuffle frames with `seed` and cut them into train/val/test.

    `sizes` are fractions (summing to at most 1; a remainder goes to test when test is None-like) or counts.
    The same (n_frames, sizes, seed) always gives the same split.
    """
    if len(sizes) != 3:
        raise ConfigurationError("needs three entries: train, val, test", where="split")
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
        counts = [int(s) for s in sizes]
    else:
        if any(s < 0 for s in sizes) or sum(sizes) > 1 + 1e-9:
            raise ConfigurationError(f"fractions {sizes} must be non-negative and sum to at most 1", where="split")
        counts = [int(np.floor(float(s) * n_frames)) for s in sizes]
        counts[0] += n_frames - sum(counts) if abs(sum(sizes) - 1) < 1e-9 else 0
    if sum(counts) > n_frames:
        raise ConfigurationError(f"split sizes {counts} need more than the {n_frames} frames available", where="split")
    order = np.random.default_rng(seed).permutation(n_frames)
    bounds = np.cumsum([0, *counts])
    return {name: np.sort(order[bounds[k] : bounds[k + 1]]) for k, name in enumerate(SPLIT_NAMES)}


def save_split(split: dict[str, np.ndarray], path: str | Path) -> None:
    """Write a split as .npz with keys train_idx, val_idx, test_idx (SchNetPack's naming)."""
    np.savez(path, **{f"{name}_idx": split[name] for name in SPLIT_NAMES})


def load_split(path: str | Path, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Read a split written by `save_split` (SchNetPack's layout): 1-D arrays of frame indices train_idx, val_idx and
    test_idx. DataError naming the file and the array if it is not such a file or an index is negative or, given the
    dataset's `n_frames`, beyond its last frame."""
    keys = [f"{name}_idx" for name in SPLIT_NAMES]
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive of arrays")
        with data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise DataError(path, missing[0], f"a split file holds the arrays {', '.join(keys)}; this one holds "
                                                  f"{', '.join(sorted(data.files)) or 'none'}")
            split = {name: np.asarray(data[key]) for name, key in zip(SPLIT_NAMES, keys)}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, "split", f"cannot read it as an .npz split ({type(exc).__name__}: {exc})") from None
    last = np.iinfo(np.int64).max if n_frames is None else n_frames - 1
    for name, key in zip(SPLIT_NAMES, keys):
        index = split[name]
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise DataError(path, key, f"must be a 1-D array of frame indices (integers), got {index.dtype} with "
                                       f"shape {index.shape}")
        outside = index[(index < 0) | (index > last)]
        if outside.size:
            where = "" if n_frames is None else f" of the dataset's {n_frames} frames (0..{last})"
            raise DataError(path, key, f"frame index {int(outside[0])} is not one{where}")
        split[name] = index.astype(np.int64)
    return split


def state_statistics(arrays: FrameArrays, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-state statistics of frames that have energies: mean and std of the energy per atom (Hartree), (N,) each,
    and the mean excitation energy from S0 (Hartree), (N,)."""
    idx = np.arange(arrays.n_frames) if indices is None else np.asarray(indices)
    idx = idx[arrays.masks[ENERGIES][idx]]
    if len(idx) == 0:
        zeros = np.zeros(arrays.n_states)
        return {"energy_per_atom_mean": zeros, "energy_per_atom_std": np.ones(arrays.n_states), "excitation_mean": zeros}
    per_atom = arrays.energies[idx] / arrays.n_atoms[idx][:, None]
    return {
        "energy_per_atom_mean": per_atom.mean(axis=0),
        "energy_per_atom_std": per_atom.std(axis=0),
        "excitation_mean": (arrays.energies[idx] - arrays.energies[idx, :1]).mean(axis=0),
    }
