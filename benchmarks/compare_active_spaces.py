"""SA-CASSCF active-space choices against a reference set: excitation energies, state averages, natural occupations.

For a seeded pick of frames of a reference dataset (default: the MR-CISD(6,4)/aug-cc-pVDZ CH2NH2+ set shared with
the project; an exsnn HDF5 dataset works too, e.g. a campaign's own labels), each SA-CASSCF spec is solved without
gradients, started as a label is. Per frame the script prints the reference's and each spec's excitation energies,
each spec's natural occupations and, with `--bond I J`, that distance (Angstrom). Per spec: the mean and largest
deviation from the reference, and how many frames have an inert active orbital (natural occupation above `--inert` or
below 2 - `--inert`): there the active space has lost the character it was chosen for. With two specs, the frames
whose state averages differ (a lower state average is the better SA-CASSCF solution). It is how the active orbitals of
datasets/ch2nh2_sacasscf were chosen and checked (its data card).

    OMP_NUM_THREADS=1 python benchmarks/compare_active_spaces.py --frames 8 --seed 3
    OMP_NUM_THREADS=1 python benchmarks/compare_active_spaces.py --reference datasets/ch2nh2_sacasscf/campaign_sa4/data.h5 \\
        --frames 30 --seed 1 --bond 0 1 --specs "casscf(6,4)/6-31g*,states=4,charge=1,avas=C 2p;N 2p" \\
        "casscf(8,6)/6-31g*,states=4,charge=1,avas=C 2p;N 2p"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from exsnn.data.check import check_frames
from exsnn.data.frame import Frame, FrameArrays
from exsnn.errors import ExsnnError
from exsnn.qm.casscf import sa_casscf_states
from exsnn.qm.scf import build_molecule
from exsnn.qm.settings import parse_qm_spec
from exsnn.units import BOHR_IN_ANGSTROM, HARTREE_IN_EV

DEFAULT_SPECS = ("casscf(6,4)/6-31g*,states=3,charge=1,nacs=none",
                 "casscf(6,4)/6-31g*,states=3,charge=1,nacs=none,avas=C 2p;N 2p")


def labelled_frames(path: str) -> tuple[list[Frame], set[int]]:
    """The frames with energies of an exsnn HDF5 dataset or of any file `exsnn data import` reads, and the indices of
    those whose atoms lie implausibly close (`exsnn.data.check`: rows 1-10 of the shared MR-CISD set, converted twice)."""
    if Path(path).suffix in (".h5", ".hdf5"):
        from exsnn.data import read_frames

        arrays = read_frames(path)
        frames = [arrays.frame(k) for k in range(arrays.n_frames)]
    else:
        from exsnn.data.importers import import_file

        frames = import_file(path).frames
    frames = [frame for frame in frames if frame.energies is not None]
    short = {p.frame for p in check_frames(FrameArrays.from_frames(frames, len(frames[0].energies))) if p.kind == "short_distance"}
    return frames, short


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="../shared/data/spainn/spainn_ch2nh2+.db")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS), help="SA-CASSCF method specs")
    parser.add_argument("--bond", type=int, nargs=2, metavar=("I", "J"), help="print this distance (atoms 0-based)")
    parser.add_argument("--bands", type=float, nargs="+", default=[1.5, 1.8, 2.1],
                        help="with --bond: the deviations in bands of that distance split here (Angstrom)")
    parser.add_argument("--inert", type=float, default=1.98, help="natural occupation above which an active orbital is inert")
    args = parser.parse_args()
    try:
        settings = {spec: parse_qm_spec(spec) for spec in args.specs}
        if any(s.excited != "casscf" for s in settings.values()):
            raise ExsnnError("--specs: every spec must be an SA-CASSCF method (casscf(n,m)/basis,...)")
        frames, implausible = labelled_frames(args.reference)
        if not 1 <= args.frames <= len(frames):
            raise ExsnnError(f"--frames {args.frames}: {args.reference} has {len(frames)} labelled frames")
        if args.bond and not all(0 <= i < frames[0].n_atoms for i in args.bond):
            raise ExsnnError(f"--bond {args.bond}: the frames have {frames[0].n_atoms} atoms")
        for setting in settings.values():  # a basis PySCF does not know: say so before any calculation
            build_molecule(frames[0].numbers, frames[0].positions, setting)
    except (ExsnnError, OSError) as exc:
        print(f"compare_active_spaces.py: {exc}", file=sys.stderr)
        sys.exit(2)
    pick = np.random.default_rng(args.seed).choice(len(frames), args.frames, replace=False)
    deviations: dict[str, list[np.ndarray]] = {spec: [] for spec in args.specs}
    averages: dict[str, dict[int, float]] = {spec: {} for spec in args.specs}
    inert = {spec: 0 for spec in args.specs}
    smallest: dict[str, list[float]] = {spec: [] for spec in args.specs}  # each frame's smallest natural occupation
    seconds = {spec: 0.0 for spec in args.specs}
    lengths: dict[str, list[float]] = {spec: [] for spec in args.specs}
    for k in pick:
        if k in implausible:
            print(f"frame {k}: left out (atoms implausibly close: exsnn data check)", flush=True)
            continue
        frame = frames[k]
        reference = (frame.energies[1:] - frame.energies[0]) * HARTREE_IN_EV
        bond, length = "", np.nan
        if args.bond:
            length = float(np.linalg.norm(np.subtract(*frame.positions[list(args.bond)])) * BOHR_IN_ANGSTROM)
            bond = f", r{tuple(args.bond)} {length:.2f} A"
        print(f"frame {k}{bond}: reference {np.round(reference, 2)} eV", flush=True)
        for spec, setting in settings.items():
            start = time.perf_counter()
            try:
                energies, occupations = sa_casscf_states(frame.numbers, frame.positions, setting)
            except ExsnnError as exc:
                print(f"  {spec}: failed: {exc}", flush=True)
                continue
            finally:
                seconds[spec] += time.perf_counter() - start
            got = (energies[1:] - energies[0]) * HARTREE_IN_EV
            n = min(len(got), len(reference))
            deviations[spec].append(got[:n] - reference[:n])
            averages[spec][int(k)] = float(energies.mean())
            lengths[spec].append(length)
            smallest[spec].append(float(occupations.min()))
            inert[spec] += bool(np.any((occupations > args.inert) | (occupations < 2.0 - args.inert)))
            print(f"  {spec}: {np.round(got, 2)} eV, natural occupations {np.round(occupations, 3)}", flush=True)
    for spec in args.specs:
        d = np.array(deviations[spec])
        if len(d):
            print(f"{spec}: mean deviation {d.mean(0).round(3)} eV, largest {np.abs(d).max(0).round(3)} eV; an inert active "
                  f"orbital at {inert[spec]} of {len(d)} frames; smallest natural occupation median "
                  f"{np.median(smallest[spec]):.3f}, largest {np.max(smallest[spec]):.3f} ({seconds[spec]:.0f} s)")
        if args.bond and len(d):
            edges = [0.0, *sorted(args.bands), np.inf]
            r = np.array(lengths[spec])
            for low, high in zip(edges[:-1], edges[1:]):
                inside = (r >= low) & (r < high)
                if inside.any():
                    print(f"  r{tuple(args.bond)} {low:g}-{high:g} A: {inside.sum()} frames, mean |deviation| "
                          f"{np.abs(d[inside]).mean(0).round(3)} eV")
    if len(args.specs) == 2:
        a, b = args.specs
        for k in sorted(set(averages[a]) & set(averages[b])):
            difference = (averages[a][k] - averages[b][k]) * 1000
            if abs(difference) > 0.1:
                print(f"frame {k}: state averages differ by {difference:+.2f} mHartree (first minus second)")


if __name__ == "__main__":
    main()
