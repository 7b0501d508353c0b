"""Crash-safe appends: does the cost of appending grow with the file? (issue #17)

Times appending 1 and 1000 CH2NH2+-sized frames (6 atoms, 3 states, energies/forces/NACs/dipoles, every label) to
datasets of 10^3 and 10^5 frames (and 10^6 with --big), with the journaled in-place append of `append_frames` (new)
and with the copy-on-append scheme it replaced (old: copy the file, append to the copy, fsync, rename; kept below as
`old_append_frames`), both in this process on the same files. Each timing is the median of --repeats appends, each
to a fresh copy of the base file (made and synced to disk untimed), so the page cache holds the file in both schemes.

    .venv/bin/python benchmarks/bench_append.py [--big] [--repeats 3] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
from synthetic import N_STATES, synthetic_arrays  # benchmarks/synthetic.py

from exsnn.data import DatasetMetadata, FrameArrays, append_frames, count_frames, read_metadata
from exsnn.data.atomic import atomic_h5_update, exclusive_lock
from exsnn.data.store import _append_arrays
from exsnn.errors import DataError

BUILD_BATCH = 100_000


def old_append_frames(path: Path, arrays: FrameArrays) -> int:
    """The copy-on-append `append_frames` of exsnn before issue #17 (existing file, FrameArrays given)."""
    with exclusive_lock(path):
        metadata = read_metadata(path)
        if arrays.n_states != metadata.n_states:
            raise DataError(path, "n_states", "mismatch")
        with atomic_h5_update(path, locked=True) as h5:
            _append_arrays(h5, arrays)
            return int(h5["frames/atom_offsets"].shape[0] - 1)


def new_append_frames(path: Path, arrays: FrameArrays) -> int:
    return append_frames(path, arrays)


def build(path: Path, n_frames: int) -> float:
    start = time.perf_counter()
    metadata = DatasetMetadata(n_states=N_STATES, method="synthetic")
    for first in range(0, n_frames, BUILD_BATCH):
        append_frames(path, synthetic_arrays(min(BUILD_BATCH, n_frames - first), seed=first), metadata)
    return time.perf_counter() - start


def median_append(append: Callable[[Path, FrameArrays], int], base: Path, work: Path, arrays: FrameArrays, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        shutil.copyfile(base, work)
        os.sync()  # the copy's dirty pages would otherwise be flushed by the first fsync that touches the file
        expected = count_frames(work) + arrays.n_frames
        start = time.perf_counter()
        total = append(work, arrays)
        times.append(time.perf_counter() - start)
        assert total == expected == count_frames(work)
    work.unlink()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="also a 10^6-frame file (about 1.2 GB; minutes to build)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [1_000, 100_000] + ([1_000_000] if args.big else [])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"h5py {h5py.version.version}, HDF5 {h5py.version.hdf5_version}")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        print(f"files in {folder}; median of {args.repeats} appends, each to a fresh copy of the base file")
        warm = Path(folder) / "warm.h5"
        build(warm, 10)
        for append in (old_append_frames, new_append_frames):
            append(warm, synthetic_arrays(1))
        rows = []
        for size in sizes:
            base = Path(folder) / f"base_{size}.h5"
            seconds = build(base, size)
            print(f"built {size} frames ({base.stat().st_size / 1e6:.0f} MB) in {seconds:.1f} s")
            for batch in (1, 1000):
                arrays = synthetic_arrays(batch, seed=7)
                work = Path(folder) / "work.h5"
                old = median_append(old_append_frames, base, work, arrays, args.repeats)
                new = median_append(new_append_frames, base, work, arrays, args.repeats)
                rows.append((size, batch, old, new))
            base.unlink()
    print(f"{'file frames':>12} {'appended':>9} {'old (copy) s':>13} {'new (journal) s':>16} {'old/new':>8}")
    for size, batch, old, new in rows:
        print(f"{size:>12} {batch:>9} {old:>13.4f} {new:>16.4f} {old / new:>8.1f}")
    for batch in (1, 1000):
        new = {size: t for size, b, _, t in rows if b == batch}
        print(f"new scheme, {batch} frame(s): largest / smallest file = {new[sizes[-1]] / new[sizes[0]]:.2f}x "
              f"({sizes[-1]} vs {sizes[0]} frames)")


if __name__ == "__main__":
    main()
