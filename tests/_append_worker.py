"""Subprocess for the crash-safety tests: appends batches of deterministic frames, reporting each commit.

usage: python _append_worker.py DATASET N_BATCHES BATCH_SIZE
Prints 'committed <frames in file>' after every append returns.
"""

from __future__ import annotations

import sys

import numpy as np

from exsnn.data import DatasetMetadata, Frame, append_frames, count_frames

N_STATES = 3


def make_frame(k: int) -> Frame:
    """Frame number k of the deterministic test sequence (6 atoms, 3 states, every label)."""
    rng = np.random.default_rng(k)
    return Frame(
        numbers=np.array([6, 7, 1, 1, 1, 1]),
        positions=rng.normal(size=(6, 3)) * 2.0,
        energies=np.sort(rng.normal(size=3)) + k,
        forces=rng.normal(size=(6, 3, 3)),
        nacs=rng.normal(size=(6, 3, 3)),
        dipoles=rng.normal(size=(6, 3)),
        charge=1,
        multiplicity=1,
        provenance={"source": "test", "k": k},
    )


def main() -> None:
    path, n_batches, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    metadata = DatasetMetadata(n_states=N_STATES, method="test")
    start = count_frames(path) if __import__("os").path.exists(path) else 0
    for b in range(n_batches):
        first = start + b * batch
        total = append_frames(path, [make_frame(k) for k in range(first, first + batch)], metadata)
        print(f"committed {total}", flush=True)


if __name__ == "__main__":
    main()
