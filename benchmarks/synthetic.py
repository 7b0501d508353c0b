"""Synthetic CH2NH2+-sized frames (6 atoms, 3 states, every label) shared by the data benchmarks."""

from __future__ import annotations

import numpy as np

from exsnn.data import FrameArrays
from exsnn.data.properties import FRAME_INTEGERS, LABELS

N_ATOMS, N_STATES = 6, 3


def synthetic_arrays(n_frames: int, seed: int = 0) -> FrameArrays:
    """n_frames CH2NH2+-like frames with every label, built in one vectorised go."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0, 0, 2.4], [0, 1.8, -1.0], [0, -1.8, -1.0], [0, 1.8, 3.4], [0, -1.8, 3.4]], float)
    n_total = n_frames * N_ATOMS
    return FrameArrays(
        n_states=N_STATES,
        atom_offsets=np.arange(n_frames + 1, dtype=np.int64) * N_ATOMS,
        numbers=np.tile(np.array([6, 7, 1, 1, 1, 1], np.int16), n_frames),
        positions=(base[None] + rng.normal(0, 0.1, (n_frames, N_ATOMS, 3))).reshape(n_total, 3),
        energies=np.sort(rng.normal(-94.5, 0.1, (n_frames, N_STATES)), axis=1),
        forces=rng.normal(0, 0.05, (n_total, N_STATES, 3)),
        nacs=rng.normal(0, 0.1, (n_total, 3, 3)),
        dipoles=rng.normal(0, 1, (n_frames, 6, 3)),
        charge=np.ones(n_frames, np.int32),
        multiplicity=np.ones(n_frames, np.int32),
        masks={label: np.ones(n_frames, bool) for label in (*LABELS, *FRAME_INTEGERS)},
        provenance=['{"source": "benchmark"}'] * n_frames,
    )
