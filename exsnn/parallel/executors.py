"""A tiny executor interface over concurrent.futures and Dask distributed.

`open_pool(spec)` gives a `WorkPool` (also a context manager; `close()` ends it) whose `map_unordered(fn, items)`
yields (item, result) as results arrive and `map(fn, items)` returns the results in order; a pool stays open across
calls, so its workers and what they imported are reused. Specs:

* ``serial``: in this process (debugging, tests of the code around it);
* ``local`` or ``local:N``: a process pool of N workers (default: CPU count);
* ``dask-local:N``: a Dask LocalCluster of N worker processes on this machine (loopback);
* ``dask:ADDRESS``: an existing Dask scheduler (e.g. tcp://host:8786).

A task whose worker process dies (killed by the out-of-memory killer or a signal, a crash in compiled code) is
retried, at most `max_attempts` times: then `WorkerDied` is yielded in place of its result, and the caller records
that item as failed. Locally, every task running when a worker died is suspect and is rerun alone, so that only the
task that really kills its worker is blamed (it is given up once it died `max_attempts` times, the last time alone).
On Dask the scheduler retries and gives up itself (KilledWorker) after its ``distributed.scheduler.allowed-failures``;
clusters started here get max_attempts - 1 and one task at a time per worker (worker-saturation 1), so that a worker's
death counts against the task it was running only (Dask counts it against every task assigned to that worker).

Local workers end with the process that started them, even when it is SIGKILLed: on Linux the kernel sends them
SIGKILL when it dies (PR_SET_PDEATHSIG, set when the pool was started from the main thread), and everywhere a daemon
thread in each worker exits when its parent is gone.

`threads` sets the threads each worker may use (OMP/MKL/OpenBLAS and PySCF), exported before workers start;
`preload` names modules each local worker imports when it starts, so that the first tasks do not pay for it.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, TypeVar

from exsnn.errors import ConfigurationError, ExsnnError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DEFAULT_ATTEMPTS = 3
PARENT_POLL_SECONDS = 0.25
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
Item = TypeVar("Item")
Result = TypeVar("Result")


class WorkerDied(ExsnnError):
    """The worker process running a task died each time it ran it (`attempts` times): yielded in place of the
    task's result; `reason` says so in words for the caller's records."""

    def __init__(self, attempts: int, detail: str = "") -> None:
        self.attempts = attempts
        self.reason = (f"the worker process running it died (killed or crashed) on {attempts} attempt"
                       f"{'s' if attempts != 1 else ''}{': ' + detail if detail else ''}")
        super().__init__(self.reason)


class WorkPool(ABC):
    """map_unordered / map over one of the backends (see module docstring)."""

    kind: str
    workers: int
    max_attempts: int

    @abstractmethod
    def _indexed(self, function: Callable[[Item], Result], items: Sequence[Item]) -> Iterator[tuple[int, Result | WorkerDied]]:
        """(index into items, result or WorkerDied) as results arrive."""

    def map_unordered(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[tuple[Item, Result | WorkerDied]]:
        """(item, function(item) or WorkerDied) as results arrive."""
        listed = list(items)
        for k, result in self._indexed(function, listed):
            yield listed[k], result

    def map(self, function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result | WorkerDied]:
        """[function(item) or WorkerDied] in the order of items."""
        listed = list(items)
        results: dict[int, Result | WorkerDied] = {}
        for k, result in self._indexed(function, listed):
            results[k] = result
        return [results[k] for k in range(len(listed))]

    def close(self) -> None:
        """End the workers (and a cluster started here); the pool cannot be used afterwards."""
        return None  # nothing to end for the serial pool; the others override this

    def __enter__(self) -> WorkPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class SerialPool(WorkPool):
    """Everything in this process, one item after another."""

    kind, workers, max_attempts = "serial", 1, 1

    def _indexed(self, function: Callable[[Item], Result], items: Sequence[Item]) -> Iterator[tuple[int, Result | WorkerDied]]:
        for k, item in enumerate(items):
            yield k, function(item)


class LocalPool(WorkPool):
    """A persistent pool of `workers` spawned processes; at most one task in flight per worker, so that the tasks
    running when a worker dies are known (see module docstring for the retries)."""

    kind = "local"

    def __init__(self, workers: int, max_attempts: int = DEFAULT_ATTEMPTS, preload: Sequence[str] = ()) -> None:
        self.workers = workers
        self.max_attempts = max_attempts
        self.preload = tuple(preload)
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def _pool(self) -> ProcessPoolExecutor:
        if self._closed:
            raise RuntimeError("this work pool is closed")
        if self._executor is None:
            main = threading.current_thread() is threading.main_thread()  # PDEATHSIG follows the spawning thread
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=start_worker, initargs=(os.getpid(), main, self.preload))
            for _ in range(self.workers):  # spawn every worker now, from this thread (a submit spawns one)
                self._executor.submit(os.getpid)
        return self._executor

    def _discard(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _indexed(self, function: Callable[[Item], Result], items: Sequence[Item]) -> Iterator[tuple[int, Result | WorkerDied]]:
        fresh = deque(range(len(items)))
        suspects: deque[int] = deque()  # running when a worker died: rerun alone
        deaths = [0] * len(items)
        running: dict[Future, int] = {}

        def submit(queue: deque[int]) -> bool:
            k = queue.popleft()
            try:
                running[self._pool().submit(function, items[k])] = k
            except BrokenProcessPool:  # a worker died since the last results came in
                queue.appendleft(k)
                return False
            return True

        while fresh or suspects or running:
            if not running and suspects:
                submit(suspects)
            elif not suspects:
                while fresh and len(running) < self.workers and submit(fresh):
                    pass
            if not running:  # the pool broke while idle: start a new one
                self._discard()
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            if not any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                for future in done:
                    yield running.pop(future), future.result()
                continue
            alone = len(running) == 1
            wait(running)  # a broken pool fails every task it still holds
            casualties = []
            for future, k in list(running.items()):
                if isinstance(future.exception(), BrokenProcessPool):
                    casualties.append(k)
                else:
                    yield k, future.result()
            running.clear()
            self._discard()
            for k in casualties:
                deaths[k] += 1
                if alone and deaths[k] >= self.max_attempts:
                    yield k, WorkerDied(deaths[k])
                else:
                    suspects.append(k)

    def close(self) -> None:
        self._discard()
        self._closed = True


class DaskPool(WorkPool):
    """Tasks on a Dask cluster through `client`; `owned` (a cluster started here) is closed with the pool."""

    kind = "dask"

    def __init__(self, client: Any, workers: int, max_attempts: int, owned: Any = None) -> None:
        self.client = client
        self.workers = workers
        self.max_attempts = max_attempts
        self._owned = owned

    def _indexed(self, function: Callable[[Item], Result], items: Sequence[Item]) -> Iterator[tuple[int, Result | WorkerDied]]:
        from distributed import KilledWorker, as_completed

        futures = {self.client.submit(function, item, pure=False): k for k, item in enumerate(items)}
        # as_completed must run on this client's loop, not on the process's default client's (dask/distributed#4357)
        for future in as_completed(futures, loop=self.client.loop):
            k = futures.pop(future)
            try:
                result = future.result()
            except KilledWorker as exc:
                result = WorkerDied(exc.allowed_failures + 1, "the Dask scheduler gave up on it (KilledWorker)")
            future.release()
            yield k, result

    def close(self) -> None:
        self.client.close()
        if self._owned is not None:
            self._owned.close()
            self._owned = None


def start_worker(parent: int, death_signal: bool, preload: Sequence[str] = ()) -> None:
    """Initializer of local workers: end this process when `parent` (its pid) ends, even by SIGKILL; import the
    modules named in `preload`."""
    if death_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher thread below still ends it
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="exsnn-parent-watch", daemon=True).start()
    for name in preload:
        importlib.import_module(name)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # orphaned: nobody will collect what this worker computes


def _set_threads(threads: int) -> None:
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def _count(argument: str, spec: str) -> int | None:
    if not argument:
        return None
    try:
        count = int(argument)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigurationError(f"{spec!r}: the number of workers must be a positive integer", source="executor")
    return count


def open_pool(spec: str = "local", threads: int = 1, max_attempts: int = DEFAULT_ATTEMPTS, preload: Sequence[str] = ()) -> WorkPool:
    """A WorkPool for `spec` (see module docstring); use it in a `with` block or call `close()`."""
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}", source="executor")
    _set_threads(threads)
    kind, _, argument = spec.partition(":")
    if kind == "serial" and not argument:
        return SerialPool()
    if kind == "local":
        return LocalPool(_count(argument, spec) or os.cpu_count() or 1, max_attempts, preload)
    if kind == "dask-local":
        import dask
        from distributed import Client, LocalCluster

        workers = _count(argument, spec) or 2
        # one task at a time per worker (as locally): a dying worker takes only its own task's attempt with it
        with dask.config.set({"distributed.scheduler.allowed-failures": max_attempts - 1,
                              "distributed.scheduler.worker-saturation": 1.0}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   host="127.0.0.1", env={name: str(threads) for name in THREAD_VARIABLES})
        return DaskPool(Client(cluster, set_as_default=False), workers, max_attempts, owned=cluster)
    if kind == "dask":
        from distributed import Client

        if not argument:
            raise ConfigurationError("the dask executor needs an address: dask:tcp://HOST:PORT", source="executor")
        client = Client(argument, set_as_default=False)  # its scheduler's own allowed-failures bound the retries
        return DaskPool(client, len(client.scheduler_info()["workers"]), DEFAULT_ATTEMPTS)
    raise ConfigurationError(f"unknown executor {spec!r}; expected serial, local[:N], dask-local[:N] or dask:ADDRESS",
                             source="executor")


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of `size` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
