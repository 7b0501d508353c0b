"""Where a dataset's labels lie in energy: how far above the S0 minimum each frame's states are.

For each dataset (exsnn HDF5, or anything `exsnn data import` reads, e.g. a SPaiNN ASE database): per state the
median, 90th percentile and largest energy above the lowest S0 label (eV), and how many frames have even their S0
above `--above` eV (for a photodynamics campaign: above the total energy any trajectory has, so such frames are
geometries the committee's trajectories reached only because the committee's surfaces were too low there). For
campaign data (frames with campaign provenance) the same count and the median S0 per iteration.

    python benchmarks/label_energy_ranges.py DATA [DATA ...] [--above 12]

Used for the CH2NH2+ data card (datasets/ch2nh2_sacasscf/NOTEBOOK.md): the SA-4 campaign's labels against the MR-CISD
frames of the SPaiNN set in ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from exsnn.errors import ExsnnError
from exsnn.units import HARTREE_IN_EV


def energies_and_iterations(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (F, N) Hartree, and each frame's campaign iteration (F,) when the frames have campaign provenance."""
    if path.suffix in (".h5", ".hdf5"):
        from exsnn.data.store import read_frames

        arrays = read_frames(path)
        campaign = [json.loads(text).get("campaign", {}) for text in arrays.provenance]
        iterations = np.array([c.get("iteration", -1) for c in campaign]) if any(campaign) else None
        return arrays.energies, iterations
    from exsnn.data.importers import import_file

    return np.array([frame.energies for frame in import_file(path).frames]), None


def report(path: Path, above: float) -> None:
    energies, iterations = energies_and_iterations(path)
    labelled = np.isfinite(energies).all(axis=1)
    relative = (energies[labelled] - energies[labelled, 0].min()) * HARTREE_IN_EV
    print(f"{path}: {labelled.sum()} labelled frames, {energies.shape[1]} states")
    for s in range(relative.shape[1]):
        values = relative[:, s]
        print(f"  S{s} above the S0 minimum (eV): median {np.median(values):.2f}, 90% {np.percentile(values, 90):.2f}, "
              f"largest {values.max():.2f}")
    print(f"  frames with S0 more than {above:g} eV above its minimum: {(relative[:, 0] > above).sum()}")
    if iterations is not None:
        kept = iterations[labelled]
        for k in np.unique(kept):
            part = relative[kept == k, 0]
            print(f"  iteration {k}: {len(part)} frames, S0 median {np.median(part):.1f} eV, "
                  f"{(part > above).sum()} above {above:g} eV")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="+")
    parser.add_argument("--above", type=float, default=12.0, help="count frames whose S0 lies this far above (eV)")
    args = parser.parse_args()
    for path in args.data:
        report(path, args.above)


if __name__ == "__main__":
    try:
        main()
    except (ExsnnError, OSError) as exc:  # a missing or unreadable file: say which, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
