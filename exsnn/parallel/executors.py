"""A tiny executor interface over concurrent.futures and Dask distributed.

`open_pool(spec)` gives a context manager yielding a `WorkPool` whose `map_unordered(fn, items)` yields
(item, result) as results arrive. Specs:

* ``serial``: in this process (debugging, tests of the code around it);
* ``local`` or ``local:N``: a process pool of N workers (default: CPU count); a worker killed mid-task breaks the
  pool, which is rebuilt and the unfinished tasks are submitted again;
* ``dask-local:N``: a Dask LocalCluster of N worker processes on this machine (loopback);
* ``dask:ADDRESS``: an existing Dask scheduler (e.g. tcp://host:8786); a worker that dies has its tasks rerun by
  the scheduler.

`threads` sets the threads each worker may use (OMP/MKL/OpenBLAS and PySCF), exported before workers start.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkPool:
    """map_unordered over one of the backends (see module docstring)."""

    def __init__(self, kind: str, workers: int, client: Any = None) -> None:
        self.kind = kind
        self.workers = workers
        self.client = client

    def map_unordered(self, function: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        if self.kind == "serial":
            for item in items:
                yield item, function(item)
        elif self.kind == "local":
            yield from self._local(function, list(items))
        else:
            yield from self._dask(function, list(items))

    def _local(self, function: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        pending = list(range(len(items)))
        while pending:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
                futures: dict[Future, int] = {pool.submit(function, items[k]): k for k in pending}
                broken = False
                while futures and not broken:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        k = futures.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            broken = True  # a worker died: rebuild the pool, resubmit what is unfinished
                            continue
                        pending.remove(k)
                        yield items[k], result

    def _dask(self, function: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed

        futures = {self.client.submit(function, item, pure=False): k for k, item in enumerate(items)}
        for future in as_completed(futures):
            yield items[futures[future]], future.result()


def _set_threads(threads: int) -> None:
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


@contextmanager
def open_pool(spec: str = "local", threads: int = 1) -> Iterator[WorkPool]:
    """Yield a WorkPool for `spec` (see module docstring); clusters started here are shut down afterwards."""
    _set_threads(threads)
    kind, _, argument = spec.partition(":")
    if kind == "serial":
        yield WorkPool("serial", 1)
    elif kind == "local":
        yield WorkPool("local", int(argument) if argument else (os.cpu_count() or 1))
    elif kind == "dask-local":
        from distributed import Client, LocalCluster

        workers = int(argument) if argument else 2
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1", env={name: str(threads) for name in THREAD_VARIABLES}) as cluster, Client(cluster) as client:
            yield WorkPool("dask", workers, client)
    elif kind == "dask":
        from distributed import Client

        if not argument:
            raise ValueError("dask executor needs an address: dask:tcp://HOST:PORT")
        with Client(argument) as client:
            yield WorkPool("dask", len(client.scheduler_info()["workers"]), client)
    else:
        raise ValueError(f"unknown executor {spec!r}; expected serial, local[:N], dask-local[:N] or dask:ADDRESS")


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
