"""Analysis of a run file: populations over time (classical and quantum) as a PNG plot and a text table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exsnn.dynamics.fssh import FAILED_STATUSES
from exsnn.dynamics.runfile import open_run
from exsnn.units import AU_TIME_IN_FS


def populations(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time (T,) in fs, classical (T, N) and quantum (T, N) populations over the trajectories that did not fail."""
    with open_run(path) as h5:
        time = h5["steps/time"][()] * AU_TIME_IN_FS
        active = h5["steps/active"][()]
        quantum = h5["steps/populations"][()]
        status = h5["steps/status"][-1]
        n_states = int(h5.attrs["n_states"])
    keep = ~np.isin(status, FAILED_STATUSES)
    classical = np.stack([(active[:, keep] == s).mean(axis=1) for s in range(n_states)], axis=1)
    return time, classical, quantum[:, keep].mean(axis=1)


def analyze_run(path: str | Path, prefix: str | Path | None = None) -> dict[str, str]:
    """Write PREFIX_populations.png and PREFIX_populations.txt; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    prefix = Path(prefix) if prefix is not None else path.with_suffix("")
    time, classical, quantum = populations(path)
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for s in range(classical.shape[1]):
        line = axis.plot(time, classical[:, s], label=f"S{s} (active state)")[0]
        axis.plot(time, quantum[:, s], "--", color=line.get_color(), label=f"S{s} (|c|$^2$)")
    axis.set_xlabel("time / fs")
    axis.set_ylabel("population")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=8, ncol=2)
    axis.set_title(path.name)
    figure.tight_layout()
    png = Path(f"{prefix}_populations.png")
    figure.savefig(png, dpi=120)
    plt.close(figure)
    table = Path(f"{prefix}_populations.txt")
    n = classical.shape[1]
    header = "time_fs " + " ".join(f"S{s}_classical" for s in range(n)) + " " + " ".join(f"S{s}_quantum" for s in range(n))
    np.savetxt(table, np.column_stack([time, classical, quantum]), header=header, fmt="%.6f")
    return {"population plot": str(png), "population table": str(table)}
