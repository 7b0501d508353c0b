"""Where work runs: in this process, a local process pool, or a Dask cluster — one small interface for all."""

from exsnn.parallel.executors import WorkerDied, WorkPool, open_pool

__all__ = ["WorkPool", "WorkerDied", "open_pool"]
