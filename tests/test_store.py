"""The HDF5 store: round trips, metadata, buffered writer, and crash safety under SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from exsnn.data import DataError, DatasetMetadata, DatasetWriter, Frame, append_frames, count_frames, read_frames, read_metadata

sys.path.insert(0, str(Path(__file__).parent))
from _append_worker import make_frame  # noqa: E402

WORKER = Path(__file__).with_name("_append_worker.py")


def assert_frames_equal(a: Frame, b: Frame) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    for name in ("positions", "energies", "forces", "nacs", "dipoles"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.charge == b.charge and a.multiplicity == b.multiplicity and a.provenance == b.provenance


def test_append_and_read_back_ragged_frames_with_masks(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    water = Frame(numbers=[8, 1, 1], positions=np.eye(3), energies=[-1.0, -0.5, -0.2], provenance={"source": "a"})
    big = make_frame(7)
    metadata = DatasetMetadata(n_states=3, method="CIS", basis="STO-3G", program="PySCF", program_version="2.x")
    assert append_frames(path, [water, big], metadata) == 2
    assert append_frames(path, [big]) == 3
    arrays = read_frames(path)
    assert arrays.n_frames == 3 and list(arrays.n_atoms) == [3, 6, 6]
    assert arrays.masks["energies"].tolist() == [True, True, True]
    assert arrays.masks["forces"].tolist() == [False, True, True]
    assert arrays.masks["charge"].tolist() == [False, True, True]
    back = arrays.frame(0)
    assert back.forces is None and back.charge is None
    assert_frames_equal(back, water.validated(3, "t", "t"))
    assert_frames_equal(arrays.frame(2), big.validated(3, "t", "t"))
    assert read_metadata(path) == metadata
    with h5py.File(path) as h5:  # every numeric array carries its unit
        assert h5["atoms/positions"].attrs["unit"] == "Bohr"
        assert h5["atoms/nacs"].attrs["unit"] == "1/Bohr"
        assert h5["frames/energies"].attrs["unit"] == "Hartree"


def test_random_access_read_returns_requested_order(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    frames = [make_frame(k) for k in range(10)]
    append_frames(path, frames, DatasetMetadata(n_states=3))
    subset = read_frames(path, [7, 2, 7, 0])
    for got, k in zip(subset.frames(), [7, 2, 7, 0]):
        assert_frames_equal(got, frames[k].validated(3, "t", "t"))


def test_state_count_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    append_frames(path, [make_frame(0)], DatasetMetadata(n_states=3))
    with pytest.raises(DataError, match="3 states"):
        append_frames(path, [make_frame(1)], DatasetMetadata(n_states=2))
    wrong = Frame(numbers=[1, 1], positions=np.zeros((2, 3)), energies=[0.0, 1.0])
    with pytest.raises(DataError, match=r"frame 0: energies: expected shape \(3,\)"):
        append_frames(path, [wrong])
    assert count_frames(path) == 1


def test_buffered_writer_commits_in_batches_and_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    with DatasetWriter(path, DatasetMetadata(n_states=3), commit_every=4) as writer:
        for k in range(6):
            writer.add(make_frame(k))
            assert count_frames(path) == (4 if k >= 3 else 0)
    assert count_frames(path) == 6


def _start_writer(path: Path, n_batches: int, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(path), str(n_batches), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_sigkill_mid_append_keeps_every_committed_frame(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    batch = 200
    append_frames(path, [make_frame(k) for k in range(4000)], DatasetMetadata(n_states=3, method="test"))
    writer = _start_writer(path, n_batches=1000, batch=batch)
    committed = 4000
    assert writer.stdout is not None
    for _ in range(3):  # let a few appends land
        committed = int(writer.stdout.readline().split()[1])
    # appends are journaled in place: wait until the writer is committing one (its journal draft or journal exists)
    draft = path.with_name(f".{path.name}.journal.tmp-{writer.pid}")
    journal = path.with_name(f".{path.name}.journal")
    deadline = time.monotonic() + 30
    while not (draft.exists() or journal.exists()):
        assert time.monotonic() < deadline, "writer never started another append"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    for line in writer.stdout:
        committed = int(line.split()[1])

    arrays = read_frames(path)  # the file opens and holds every committed frame, whole
    assert arrays.n_frames in (committed, committed + batch)
    for k in range(0, arrays.n_frames, 97):
        assert_frames_equal(arrays.frame(k), make_frame(k).validated(3, "t", "t"))
    assert_frames_equal(arrays.frame(arrays.n_frames - 1), make_frame(arrays.n_frames - 1).validated(3, "t", "t"))

    # a new writer resumes where the file stands and clears the interrupted copy
    resumed = _start_writer(path, n_batches=1, batch=batch)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and out.split()[-1] == str(arrays.n_frames + batch)
    assert not draft.exists() and not journal.exists()
    assert count_frames(path) == arrays.n_frames + batch


def test_reader_never_sees_half_written_frames(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    batch = 50
    append_frames(path, [make_frame(k) for k in range(batch)], DatasetMetadata(n_states=3))
    writer = _start_writer(path, n_batches=30, batch=batch)
    seen: list[int] = []
    errors: list[str] = []

    def read_while_writing() -> None:
        while writer.poll() is None:
            arrays = read_frames(path)
            seen.append(arrays.n_frames)
            if arrays.n_frames % batch:
                errors.append(f"partial batch visible: {arrays.n_frames} frames")
            last = arrays.frame(arrays.n_frames - 1)
            expected = make_frame(arrays.n_frames - 1).validated(3, "t", "t")
            if not np.array_equal(last.nacs, expected.nacs):
                errors.append(f"frame {arrays.n_frames - 1} differs from what was written")

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    writer.communicate(timeout=300)
    reader.join()
    assert writer.returncode == 0
    assert not errors, errors[:3]
    assert len(set(seen)) > 2, "the reader should have seen the file grow"
    assert count_frames(path) == 31 * batch


def test_concurrent_writers_serialise_and_leave_no_lock_file(tmp_path: Path) -> None:
    """Three processes append at once: every frame lands (the lock serialises them even though each holder removes
    the sidecar lock file when it is done), and no `.NAME.lock` is left beside the dataset."""
    path = tmp_path / "d.h5"
    append_frames(path, [make_frame(0)], DatasetMetadata(n_states=3, method="test"))
    assert not (tmp_path / ".d.h5.lock").exists()
    writers = [_start_writer(path, n_batches=15, batch=3) for _ in range(3)]
    for writer in writers:
        writer.communicate(timeout=300)
        assert writer.returncode == 0
    assert count_frames(path) == 1 + 3 * 15 * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]
