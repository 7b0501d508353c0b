"""Start-up time of the command line: what a user waits for before anything is computed.

Each command runs in a fresh interpreter (median of 3 runs, wall time), next to the imports it cannot avoid, so the
ratios say how much exsnn adds on top of Python, torch and SchNetPack:

* `exsnn --help` against a bare `python -c pass` (nothing heavy may be imported to build the parser);
* `exsnn point --potential tully1` (one structure) against `python -c "import torch"`;
* `exsnn point --potential model:DIR` (a small PaiNN model, one structure) against `python -c "import schnetpack"`
  (SchNetPack imports Lightning at package import, which dominates).

    .venv/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from exsnn.model.network import MultiStateNetwork, NetworkConfig
from exsnn.model.training import save_network

GEOMETRY = "6\nCH2NH2+\nC 0 0 0\nN 0 0 1.28\nH 0 0.94 -0.54\nH 0 -0.94 -0.54\nH 0 0.87 1.85\nH 0 -0.87 1.85\n"
LINE = "1\nparticle\nX -5.0 0 0\n"


def wall(command: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    python, exsnn = sys.executable, [sys.executable, "-m", "exsnn.cli.main"]
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "ch2nh2.xyz").write_text(GEOMETRY)
        (root / "line.xyz").write_text(LINE)
        (root / "model").mkdir()
        network = MultiStateNetwork(NetworkConfig(n_states=3, n_atom_basis=64, n_interactions=3))
        save_network(network, root / "model" / "model.pt")
        rows = [
            ("exsnn --help", [*exsnn, "--help"], "python -c pass", [python, "-c", "pass"]),
            ("exsnn point tully1", [*exsnn, "point", "--potential", "tully1", str(root / "line.xyz")],
             "import torch", [python, "-c", "import torch"]),
            ("exsnn point model:", [*exsnn, "point", "--potential", f"model:{root / 'model'}", str(root / "ch2nh2.xyz")],
             "import schnetpack", [python, "-c", "import schnetpack"]),
        ]
        print(f"{'command':22s} {'s':>7s}   {'baseline':18s} {'s':>7s} {'ratio':>7s}")
        for name, command, base_name, base in rows:
            ours, theirs = wall(command), wall(base)
            print(f"{name:22s} {ours:7.2f}   {base_name:18s} {theirs:7.2f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
