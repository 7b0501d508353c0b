"""exsnn.parallel: persistent pools, bounded retries of a task that kills its worker (process pool and Dask on
loopback), and workers that end with a SIGKILLed parent (real processes throughout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import H2O_DATASET

from exsnn.errors import ConfigurationError
from exsnn.parallel import WorkerDied, open_pool

POISON = 3  # the item that kills its worker


def square_or_die(job: tuple[int, str]) -> tuple[int, int]:
    """(item squared, worker pid); item POISON records the attempt in `log` and SIGKILLs its own worker."""
    item, log = job
    if item == POISON:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return item * item, os.getpid()


def worker_pid(_: object) -> int:
    time.sleep(0.2)  # long enough for both workers to take a share
    return os.getpid()


def test_local_pool_gives_up_on_a_task_that_kills_its_worker_and_stays_usable(tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    with open_pool("local:2", max_attempts=2) as pool:
        results = dict((item[0], result) for item, result in pool.map_unordered(square_or_die, [(k, str(log)) for k in range(6)]))
        assert sorted(results) == list(range(6))  # every item reported once
        died = results.pop(POISON)
        assert isinstance(died, WorkerDied) and died.attempts == 2 and "died" in died.reason
        assert {k: r[0] for k, r in results.items()} == {k: k * k for k in range(6) if k != POISON}  # the others are not blamed
        assert len(log.read_text().split()) == 2  # exactly max_attempts runs of the killer
        assert [r[0] for r in pool.map(square_or_die, [(k, str(log)) for k in (4, 5)])] == [16, 25]  # the pool works on


def test_dask_local_cluster_gives_up_on_a_task_that_kills_its_worker(tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    with open_pool("dask-local:2", max_attempts=2) as pool:
        results = pool.map(square_or_die, [(k, str(log)) for k in range(6)])
    died = results[POISON]
    assert isinstance(died, WorkerDied) and died.attempts == 2
    assert [r[0] for k, r in enumerate(results) if k != POISON] == [k * k for k in range(6) if k != POISON]
    assert len(log.read_text().split()) == 2  # the scheduler's allowed failures (max_attempts - 1) were set


def test_local_pool_is_kept_across_calls_and_ends_with_close() -> None:
    pool = open_pool("local:2")
    first = set(pool.map(worker_pid, range(6)))
    second = set(pool.map(worker_pid, range(6)))
    assert first == second and len(first) == 2 and os.getpid() not in first  # the same two processes both times
    pool.close()
    assert all(gone(pid) for pid in first)


def test_executor_specs_are_checked() -> None:
    for spec in ("locale:2", "local:0", "local:x", "dask"):
        with pytest.raises(ConfigurationError):
            open_pool(spec)
    with pytest.raises(ConfigurationError):
        open_pool("local:2", max_attempts=0)


def gone(pid: int) -> bool:
    """The process has exited (no entry, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (parent pid: the 4th field of /proc/PID/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_workers_of_a_sigkilled_label_command_exit_with_it(tmp_path: Path) -> None:
    source = tmp_path / "h2o.xyz"
    source.write_text("\n".join(H2O_DATASET.read_text().splitlines()[: 5 * 12]) + "\n")
    command = [sys.executable, "-m", "exsnn.cli.main", "label", str(source), "-o", str(tmp_path / "out.h5"), "--method",
               "tda-hf/sto-3g", "--nacs", "overlap", "--executor", "local:2", "--no-progress"]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = {pid for pid in descendants(parent.pid) if "spawn_main" in command_line(pid)}
            time.sleep(0.1)
        assert len(workers) == 2, "the pool's workers did not start"
        time.sleep(2.0)  # mid-run: both workers are labelling (a geometry takes several seconds with overlap NACs)
        children = descendants(parent.pid)
        assert parent.poll() is None and workers <= children  # children: the workers and multiprocessing's resource tracker
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(gone(pid) for pid in children):
            time.sleep(0.1)
        left = {pid: command_line(pid) for pid in children if not gone(pid)}
        assert not left, f"processes left behind by the killed parent: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in children:  # never leave anything behind, even when the test fails
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_labelling_records_a_geometry_whose_worker_is_always_killed_as_a_failed_frame(tmp_path: Path) -> None:
    """An outside killer (as the out-of-memory killer would) SIGKILLs every pool worker it sees: each geometry is
    tried max_attempts times, then written as a failed frame with the reason; labelling ends."""
    from exsnn.data import read_frames
    from exsnn.qm.labelling import label_file
    from exsnn.qm.settings import parse_method

    source = tmp_path / "h2o.xyz"
    source.write_text("\n".join(H2O_DATASET.read_text().splitlines()[: 5 * 2]) + "\n")
    finished = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not finished.is_set() and len(kills) < 20:  # bounded: code that retries forever ends up labelling
            for pid in descendants(os.getpid()):
                if "spawn_main" in command_line(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = label_file(source, tmp_path / "out.h5", parse_method("tda-hf/sto-3g", n_states=3, nacs="none"),
                             executor="local:1", progress=False, max_attempts=2)
    finally:
        finished.set()
        thread.join()
    assert (summary.labelled, summary.failed) == (0, 2)
    assert all("worker process running it died" in reason and "2 attempts" in reason for reason in summary.failures.values())
    arrays = read_frames(tmp_path / "out.h5")
    provenance = [json.loads(p) for p in arrays.provenance]
    assert sorted(p["input_index"] for p in provenance) == [0, 1] and all("died" in p["failure"] for p in provenance)
    assert not arrays.masks["energies"].any()  # written, masked, with the reason
    info = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "data", "info", str(tmp_path / "out.h5"), "--json"],
                          capture_output=True, text=True)
    assert [entry["frame"] for entry in json.loads(info.stdout)["failed_frames"]] == [0, 1]
