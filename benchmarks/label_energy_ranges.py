"""Where a dataset's labels lie in energy: how far above the S0 minimum each frame's states are.

For each dataset (exsnn HDF5, or anything `exsnn data import` reads, e.g. a SPaiNN ASE database): per state the
median, 90th percentile and largest energy above the lowest S0 label (eV), and how many frames have even their S0
above `--above` eV (for a photodynamics campaign: above the total energy any trajectory has, so such frames are
geometries the committee's trajectories reached only because the committee's surfaces were too low there). For
campaign data (frames with campaign provenance) the same count and the median S0 per iteration.

    python benchmarks/label_energy_ranges.py DATA [DATA ...] [--above 12] [--bond C-N --bond H-C/N]

`--bond A-B` also says how stretched the bonds are: for every atom of element A its distance to the nearest atom of
element B (`A-B/C`: of B or C), per frame the longest of these (Angstrom; median, 90th percentile, largest), and the
share of frames where it is more than 1.5 times its value at the frame with the lowest S0.

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
from exsnn.units import BOHR_IN_ANGSTROM, HARTREE_IN_EV

STRETCHED = 1.5  # a bond counts as stretched beyond this times its length at the lowest-S0 frame


def read_dataset(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[tuple[np.ndarray, np.ndarray]]]:
    """Energies (F, N) Hartree, each frame's campaign iteration (F,) when the frames have campaign provenance, and
    each frame's (atomic numbers, positions in Bohr)."""
    if path.suffix in (".h5", ".hdf5"):
        from exsnn.data.store import read_frames

        arrays = read_frames(path)
        campaign = [json.loads(text).get("campaign", {}) for text in arrays.provenance]
        iterations = np.array([c.get("iteration", -1) for c in campaign]) if any(campaign) else None
        frames = [arrays.frame(k) for k in range(arrays.n_frames)]
        return arrays.energies, iterations, [(f.numbers, f.positions) for f in frames]
    from exsnn.data.importers import import_file

    frames = import_file(path).frames
    return np.array([frame.energies for frame in frames]), None, [(f.numbers, f.positions) for f in frames]


def parse_bond(text: str) -> tuple[int, list[int]]:
    """'H-C/N' -> (1, [6, 7]); raises ExsnnError naming the option."""
    from ase.data import atomic_numbers

    parts = text.split("-")
    symbols = [parts[0], *parts[1].split("/")] if len(parts) == 2 else []
    if not symbols or any(symbol not in atomic_numbers for symbol in symbols):
        raise ExsnnError(f"--bond {text!r}: expected two element symbols as A-B or A-B/C (e.g. C-N, H-C/N)")
    return atomic_numbers[symbols[0]], [atomic_numbers[symbol] for symbol in symbols[1:]]


def longest_bond(numbers: np.ndarray, positions: np.ndarray, bond: tuple[int, list[int]]) -> float:
    """Over the atoms of element bond[0], the largest distance (Angstrom) to the nearest atom of the elements bond[1];
    NaN if the frame lacks either."""
    first = np.flatnonzero(numbers == bond[0])
    second = np.flatnonzero(np.isin(numbers, bond[1]))
    second = [[j for j in second if j != i] for i in first]
    if len(first) == 0 or not all(second):
        return float("nan")
    return max(min(np.linalg.norm(positions[i] - positions[j]) for j in js) for i, js in zip(first, second)) * BOHR_IN_ANGSTROM


def report(path: Path, above: float, bonds: list[str]) -> None:
    energies, iterations, structures = read_dataset(path)
    labelled = np.isfinite(energies).all(axis=1)
    relative = (energies[labelled] - energies[labelled, 0].min()) * HARTREE_IN_EV
    print(f"{path}: {labelled.sum()} labelled frames, {energies.shape[1]} states")
    for s in range(relative.shape[1]):
        values = relative[:, s]
        print(f"  S{s} above the S0 minimum (eV): median {np.median(values):.2f}, 90% {np.percentile(values, 90):.2f}, "
              f"largest {values.max():.2f}")
    print(f"  frames with S0 more than {above:g} eV above its minimum: {(relative[:, 0] > above).sum()}")
    kept_structures = [structures[k] for k in np.flatnonzero(labelled)]
    lowest = int(np.argmin(relative[:, 0]))
    for text in bonds:
        bond = parse_bond(text)
        lengths = np.array([longest_bond(numbers, positions, bond) for numbers, positions in kept_structures])
        print(f"  longest {text} bond (Angstrom): median {np.nanmedian(lengths):.2f}, 90% {np.nanpercentile(lengths, 90):.2f}, "
              f"largest {np.nanmax(lengths):.2f}; more than {STRETCHED:g} x its {lengths[lowest]:.2f} at the lowest S0 in "
              f"{np.mean(lengths > STRETCHED * lengths[lowest]):.0%} of the frames")
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
    parser.add_argument("--bond", action="append", default=[], help="A-B or A-B/C: how stretched these bonds are")
    args = parser.parse_args()
    for text in args.bond:
        parse_bond(text)  # every option checked before any output
    for path in args.data:
        report(path, args.above, args.bond)


if __name__ == "__main__":
    try:
        main()
    except (ExsnnError, OSError) as exc:  # a missing or unreadable file: say which, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
