"""What a photochemist does after a surface-hopping run (reads run files through `exsnn.dynamics.runfile`).

============  ===========================================================================================
records       a run file's records as numpy arrays (times, active states, |c|^2, energies, hops, geometries)
populations   classical (active state) and quantum (|c|^2) populations with trajectory-bootstrap bands
kinetics      first-order kinetic networks ("S2->S1, S1->S0"), fits to populations, bootstrap errors
hops          hop table: times, states, energy gaps, frustrated hops, geometries at hops as XYZ
diagnostics   per-trajectory energy checks (SHARC-like filters) and the trajectories they exclude
export        shnitsel-tools NetCDF and ASE trajectories
report        `analyze_run(path, ...) -> dict`: all of the above in one call, with plots and tables
============  ===========================================================================================
"""

from typing import Any

__all__ = ["analyze_run"]


def __getattr__(name: str) -> Any:  # `from exsnn.analysis import analyze_run` without importing matplotlib & co. early
    if name == "analyze_run":
        from exsnn.analysis.report import analyze_run

        return analyze_run
    raise AttributeError(name)
