"""In-place journaled appends (issue #17): crash safety under real SIGKILLs, old files, concurrent readers.

The writers are real subprocesses (`_append_worker.py`, or a variant written here that pauses inside the commit so
that the kill lands exactly before the journal's rename or in the middle of writing the journal into the file).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stdout
from pathlib import Path

import h5py
import numpy as np
import pytest

from exsnn.cli.main import main as exsnn_main
from exsnn.data import DatasetMetadata, FrameArrays, append_frames, atomic, count_frames, read_frames, read_metadata
from exsnn.data.atomic import _Overlay, atomic_h5_update, exclusive_lock, journal_path
from exsnn.data.store import _append_arrays, _create_layout, open_h5

sys.path.insert(0, str(Path(__file__).parent))
from _append_worker import make_frame  # noqa: E402

WORKER = Path(__file__).with_name("_append_worker.py")
N_STATES = 3

# A writer that stops inside its commit: PAUSE=commit stops with the journal draft complete, just before its rename;
# PAUSE=apply stops after the first range of the journal was written into the dataset (the file alone is then torn).
PAUSING_WORKER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import exsnn.data.atomic as atomic
    from _append_worker import make_frame
    from exsnn.data import DatasetMetadata, append_frames, count_frames

    path, batch, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    real_replace, real_pwrite = os.replace, os.pwrite

    def stop(what):
        print(what, flush=True)
        time.sleep(600)

    def replace(src, dst, *args, **kwargs):
        if pause == "commit" and str(dst).endswith(".journal"):
            stop("paused before rename")
        return real_replace(src, dst, *args, **kwargs)

    def pwrite(fd, data, offset):
        written = real_pwrite(fd, data, offset)
        if pause == "apply":
            stop("paused mid-apply")
        return written

    os.replace, os.pwrite = replace, pwrite
    start = count_frames(path)
    append_frames(path, [make_frame(k) for k in range(start, start + batch)], DatasetMetadata(n_states=3))
    print("committed", start + batch, flush=True)
    """
)


def expected_arrays(n: int) -> FrameArrays:
    return FrameArrays.from_frames([make_frame(k).validated(N_STATES, "t", "t") for k in range(n)], N_STATES)


def assert_arrays_equal(got: FrameArrays, want: FrameArrays) -> None:
    assert got.n_frames == want.n_frames
    for name in ("atom_offsets", "numbers", "positions", "energies", "forces", "nacs", "dipoles", "charge", "multiplicity"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for label, mask in want.masks.items():
        np.testing.assert_array_equal(got.masks[label], mask, err_msg=label)
    assert [json.loads(p) for p in got.provenance] == [json.loads(p) for p in want.provenance]


def check_dataset(path: Path, want: FrameArrays) -> None:
    """Every reader of exsnn opens the file and sees exactly `want`."""
    assert count_frames(path) == want.n_frames
    assert_arrays_equal(read_frames(path), want)
    assert read_metadata(path).n_states == N_STATES
    if want.n_frames:
        last = want.n_frames - 1
        assert_arrays_equal(read_frames(path, [last, 0]), want.select([last, 0]))
    out = io.StringIO()
    with redirect_stdout(out):
        assert exsnn_main(["data", "info", str(path), "--json"]) == 0
    assert json.loads(out.getvalue())["n_frames"] == want.n_frames


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def start_worker(*args: object, script: Path = WORKER) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigkill_at_random_times_keeps_every_committed_frame_and_only_whole_batches(tmp_path: Path) -> None:
    """Real SIGKILLs of a process appending in a loop, at random instants (and, with a pausing writer, exactly
    before the journal's rename and in the middle of writing it into the file): after each, the file opens with every
    reader, holds every frame the writer reported committed, bit for bit, and no partial batch."""
    path = tmp_path / "data" / "d.h5"
    append_frames(path, [make_frame(k) for k in range(300)], DatasetMetadata(n_states=N_STATES, method="test"))
    want = expected_arrays(4000)
    rng = random.Random(17)
    pausing = tmp_path / "pausing_worker.py"
    pausing.write_text(PAUSING_WORKER.format(tests=str(Path(__file__).parent)))
    plan = ["random"] * 12 + ["commit", "apply"] * 2
    rng.shuffle(plan)
    outcomes: list[str] = []
    n = 300
    for kind in plan:
        batch = rng.choice([1, 3, 17, 64])
        if kind == "random":
            writer = start_worker(path, 10_000, batch)
            assert writer.stdout is not None
            committed = int(writer.stdout.readline().split()[1])  # in its loop now
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            writer = start_worker(path, batch, kind, script=pausing)
            assert writer.stdout is not None
            assert writer.stdout.readline().startswith("paused"), kind
            committed = n
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        for line in writer.stdout:
            committed = int(line.split()[1])
        writer.stdout.close()
        n = count_frames(path)
        # (b) and (c): every committed frame, nothing partial (at most the batch whose journal was renamed when killed)
        if kind == "commit":
            assert n == committed, "a journal that was not renamed must not count"
        elif kind == "apply":
            assert n == committed + batch, "a renamed journal is committed"
        else:
            assert n in (committed, committed + batch), (n, committed, batch)
        if n > want.n_frames:  # a fast writer (or a slow kill on a busy machine) got further than expected
            want = expected_arrays(2 * n)
        check_dataset(path, want.select(np.arange(n)))  # (a): opens with read_frames, count_frames, data info
        outcomes.append(f"{kind}:{'journal' if journal_path(path).exists() else 'clean'}")
    assert any(o.endswith("journal") for o in outcomes)
    # a new writer folds in whatever was left, appends, and leaves nothing beside the dataset
    resumed = start_worker(path, 1, 5)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and out.split()[-1] == str(n + 5)
    check_dataset(path, want.select(np.arange(n + 5)))
    assert leftovers(path) == []
    with h5py.File(path, "r") as h5:  # and plain h5py reads the file alone
        assert h5["frames/atom_offsets"].shape == (n + 6,)
    print("kill outcomes:", outcomes)


def write_old_layout(path: Path, frames: FrameArrays, libver: str | None = None) -> None:
    """A dataset as earlier exsnn versions wrote it: the whole file copied on every append (`atomic_h5_update`)."""
    metadata = DatasetMetadata(n_states=N_STATES, method="CIS", basis="STO-3G")
    with exclusive_lock(path):
        with atomic_h5_update(path, locked=True) as h5:
            _create_layout(h5, metadata)
    for start in range(0, frames.n_frames, 7):
        with atomic_h5_update(path) as h5:
            _append_arrays(h5, frames.select(np.arange(start, min(start + 7, frames.n_frames))))
    if libver is not None:  # the same layout in a newer HDF5 file format (superblock v3, status flags)
        with h5py.File(path) as old, h5py.File(path.with_suffix(".tmp"), "w", libver=libver) as new:
            for key, value in old.attrs.items():
                new.attrs[key] = value
            for name in ("frames", "atoms", "masks"):
                old.copy(old[name], new)
        os.replace(path.with_suffix(".tmp"), path)


@pytest.mark.parametrize("libver", [None, "latest"])
def test_old_layout_file_is_read_and_appended_in_place(tmp_path: Path, libver: str | None) -> None:
    path = tmp_path / "old.h5"
    want = expected_arrays(60)
    write_old_layout(path, want.select(np.arange(40)), libver)
    check_dataset(path, want.select(np.arange(40)))
    inode = path.stat().st_ino
    assert append_frames(path, [make_frame(k) for k in range(40, 41)]) == 41
    assert append_frames(path, want.select(np.arange(41, 60))) == 60
    assert path.stat().st_ino == inode, "appended in place, not replaced by a copy"
    check_dataset(path, want)
    assert read_metadata(path).method == "CIS" and leftovers(path) == []


def test_open_reader_keeps_its_view_and_defers_the_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.h5"
    want = expected_arrays(30)
    append_frames(path, [make_frame(k) for k in range(10)], DatasetMetadata(n_states=N_STATES))
    monkeypatch.setattr(atomic, "APPLY_WAIT_S", 0.05)
    with open_h5(path) as held:
        before = held["frames/energies"][()]
        assert append_frames(path, [make_frame(k) for k in range(10, 20)]) == 20  # committed, apply deferred
        assert journal_path(path).exists()
        check_dataset(path, want.select(np.arange(20)))  # fresh readers see file + journal
        assert append_frames(path, want.select(np.arange(20, 25))) == 25  # folds the pending journal into its own
        check_dataset(path, want.select(np.arange(25)))
        np.testing.assert_array_equal(held["frames/energies"][()], before)
        assert held["frames/atom_offsets"].shape == (11,)
        with h5py.File(path, "r") as plain:  # the file alone is still the old, consistent one
            assert plain["frames/atom_offsets"].shape == (11,)
    assert append_frames(path, want.select(np.arange(25, 30))) == 30  # reader gone: applied, journal removed
    assert leftovers(path) == []
    check_dataset(path, want)
    with h5py.File(path, "r") as plain:
        np.testing.assert_array_equal(plain["atoms/nacs"][()], want.nacs)


def test_copy_on_write_update_folds_in_a_pending_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.h5"
    want = expected_arrays(12)
    append_frames(path, [make_frame(k) for k in range(5)], DatasetMetadata(n_states=N_STATES))
    monkeypatch.setattr(atomic, "APPLY_WAIT_S", 0.0)
    with open_h5(path):
        append_frames(path, [make_frame(k) for k in range(5, 9)])
    assert journal_path(path).exists()
    with atomic_h5_update(path) as h5:  # the whole-file scheme (run files) on a file with a pending journal
        _append_arrays(h5, want.select(np.arange(9, 12)))
    assert leftovers(path) == []
    check_dataset(path, want)


def test_a_journal_left_beside_a_replaced_file_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.h5"
    append_frames(path, [make_frame(k) for k in range(5)], DatasetMetadata(n_states=N_STATES))
    monkeypatch.setattr(atomic, "APPLY_WAIT_S", 0.0)
    with open_h5(path):
        append_frames(path, [make_frame(5)])
    assert journal_path(path).exists()
    other = tmp_path / "other.h5"
    append_frames(other, [make_frame(k) for k in range(3)], DatasetMetadata(n_states=N_STATES))
    os.replace(other, path)  # e.g. `exsnn data import --overwrite` stages a new file and renames it over
    check_dataset(path, expected_arrays(3))
    assert append_frames(path, [make_frame(3)]) == 4
    assert leftovers(path) == []


def test_overlay_matches_a_byte_array_under_random_writes_truncations_and_reads(tmp_path: Path) -> None:
    rng = random.Random(3)
    for trial in range(100):
        base = rng.randbytes(rng.randint(0, 3000))
        (tmp_path / "base").write_bytes(base)
        fd = os.open(tmp_path / "base", os.O_RDONLY)
        try:
            model, overlay = bytearray(base), _Overlay(fd, len(base))
            for _ in range(60):
                action = rng.random()
                if action < 0.6:
                    offset, data = rng.randint(0, len(model) + 200), rng.randbytes(rng.randint(0, 400))
                    model.extend(bytes(max(0, offset - len(model))))
                    model[offset : offset + len(data)] = data
                    overlay.seek(offset)
                    overlay.write(data)
                elif action < 0.75:
                    size = rng.randint(0, len(model) + 300)
                    del model[size:]
                    model.extend(bytes(size - len(model)))
                    overlay.truncate(size)
                else:
                    offset, n = rng.randint(0, len(model)), rng.randint(0, 500)
                    buffer = bytearray(n)
                    overlay.seek(offset)
                    overlay.readinto(buffer)
                    assert bytes(buffer) == bytes(model[offset : offset + n]).ljust(n, b"\0"), trial
                assert overlay.size == len(model)
            ends = [s + len(d) for s, d in zip(overlay.starts, overlay.datas)]
            assert all(e < s for e, s in zip(ends, overlay.starts[1:])), "ranges sorted, disjoint, merged"
        finally:
            os.close(fd)
