"""`exsnn data import|info|export`: move excited-state data in and out of exsnn HDF5 datasets."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from exsnn.cli.output import print_json
from exsnn.data.check import PROBLEM_KINDS, CheckSettings
from exsnn.data.store import append_frames, read_frames, read_metadata
from exsnn.errors import ConfigurationError, DataError

# importers, exporters and the summary pull in ase.db and friends: imported by the commands that use them
IMPORT_FORMATS = ("ase-db", "extxyz", "schnarc-db", "sharc", "spainn-db")  # = exsnn.data.importers.IMPORTERS
EXPORT_FORMATS = ("extxyz", "spainn-db")  # = exsnn.data.exporters.EXPORTERS


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="import, inspect and export excited-state datasets")
    commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = commands.add_parser("import", help="import SPaiNN/SchNarc databases, SHARC QM.out or extended XYZ into HDF5")
    p.add_argument("source", help="file to import (.db, .xyz/.extxyz, QM.out, or a directory of QM.out files)")
    p.add_argument("destination", help="exsnn HDF5 dataset to write (.h5)")
    p.add_argument("--format", help=f"source format: {', '.join(IMPORT_FORMATS)} (default: from the file name)")
    p.add_argument("--qm-in", help="SHARC: QM.in with the geometry (default: QM.in beside QM.out)")
    p.add_argument("--distance-unit", help="ASE databases: unit of the stored positions when the file does not say (default Bohr)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="append to an existing dataset")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--allow-mixed", action="store_true",
                   help="with --append: accept another molecule, level of theory or program (each frame's provenance "
                        "then records its source's metadata)")
    p.set_defaults(run=run_import)

    p = commands.add_parser("info", help="summarise a dataset and report suspicious frames")
    p.add_argument("file", help="exsnn HDF5 dataset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_check_options(p)
    p.set_defaults(run=run_info)

    p = commands.add_parser("filter", help="copy a dataset without the frames the data check flags (or that failed)")
    p.add_argument("file", help="exsnn HDF5 dataset")
    p.add_argument("destination", help="new exsnn HDF5 dataset")
    p.add_argument("--drop", default="short_distance,non_finite,energy_order",
                   help="comma-separated problem kinds to drop (default %(default)s; also: nac_translation)")
    p.add_argument("--keep-failed", action="store_true", help="keep frames whose labelling failed (no labels)")
    p.add_argument("--overwrite", action="store_true")
    _add_check_options(p)
    p.set_defaults(run=run_filter)

    p = commands.add_parser("export", help="export a dataset to a SPaiNN ASE database (.db) or extended XYZ")
    p.add_argument("file", help="exsnn HDF5 dataset")
    p.add_argument("destination", help="output file (.db or .xyz/.extxyz)")
    p.add_argument("--format", choices=EXPORT_FORMATS, help="output format (default: from the file name)")
    p.add_argument("--units", choices=("atomic", "ase"), default="atomic",
                   help="extended XYZ units: atomic (default, exact round trip) or ase (eV, Angstrom)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=run_export)


def _add_check_options(p: argparse.ArgumentParser) -> None:
    defaults = CheckSettings()
    p.add_argument("--distance-factor", type=float, default=defaults.distance_factor,
                   help="flag atom pairs closer than this times the sum of covalent radii (default %(default)s)")
    p.add_argument("--nac-translation-ratio", type=float, default=defaults.nac_translation_ratio,
                   help="flag NACs whose sum over atoms exceeds this fraction of their norm (default %(default)s)")


def run_import(args: argparse.Namespace) -> int:
    from exsnn.data.importers import IMPORTERS, detect_format, import_file

    if args.format is not None and args.format not in IMPORTERS:
        raise ConfigurationError(f"unknown format {args.format!r}; expected one of {', '.join(sorted(IMPORTERS))}", source="--format")
    destination = Path(args.destination)
    if destination.exists() and not (args.append or args.overwrite):
        raise DataError(destination, "file", "already exists (pass --append or --overwrite)")
    fmt = args.format or detect_format(args.source)
    imported = import_file(args.source, fmt, qm_in=args.qm_in, distance_unit=args.distance_unit)
    if args.append and destination.exists():
        differences = _differences(destination, imported)
        if differences and not args.allow_mixed:
            raise DataError(destination, differences[0][0], f"{differences[0][1]}; pass --allow-mixed to append anyway "
                            "(each frame then records its source's metadata)")
        if differences:
            source_metadata = {"method": imported.metadata.method, "basis": imported.metadata.basis,
                               "program": imported.metadata.program, "program_version": imported.metadata.program_version}
            for frame in imported.frames:
                frame.provenance["source_metadata"] = source_metadata
    if args.overwrite and destination.exists():
        staging = destination.with_name(destination.name + ".importing")
        staging.unlink(missing_ok=True)
        append_frames(staging, imported.frames, imported.metadata, source=args.source)
        os.replace(staging, destination)
        total = len(imported.frames)
    else:
        total = append_frames(destination, imported.frames, imported.metadata, source=args.source)
    print(
        f"imported {len(imported.frames)} frames ({imported.metadata.n_states} states) from {args.source} "
        f"[{fmt}] into {destination} ({total} frames in the file)"
    )
    return 0


def _compositions(numbers: list[list[int]] | list) -> set[tuple[int, ...]]:
    return {tuple(sorted(int(z) for z in frame)) for frame in numbers}


def _differences(destination: Path, imported: Any) -> list[tuple[str, str]]:
    """What differs between a dataset and frames about to be appended: [(field, description)]."""
    from ase.data import chemical_symbols

    from exsnn.data.store import open_h5

    existing = read_metadata(destination)
    found = []
    if existing.n_states != imported.metadata.n_states:
        found.append(("n_states", f"the file has {existing.n_states} states, the source {imported.metadata.n_states}"))
    for name in ("method", "basis", "program"):
        old, new = getattr(existing, name), getattr(imported.metadata, name)
        if old and new and old.strip().lower() != new.strip().lower():
            found.append((name, f"the file's {name} is {old!r}, the source's {new!r}"))
    with open_h5(destination) as h5:
        numbers, offsets = h5["atoms/numbers"][:], h5["frames/atom_offsets"][:]
    have = _compositions([numbers[a:b] for a, b in zip(offsets[:-1], offsets[1:])])
    new = _compositions([frame.numbers for frame in imported.frames])
    if have and new - have:
        formula = lambda c: "".join(f"{chemical_symbols[z]}{c.count(z) if c.count(z) > 1 else ''}" for z in sorted(set(c)))  # noqa: E731
        found.append(("molecule", f"the source holds {', '.join(sorted(formula(c) for c in new - have))}, "
                                  f"the file {', '.join(sorted(formula(c) for c in have))}"))
    return found


def run_info(args: argparse.Namespace) -> int:
    from exsnn.data.summary import format_summary, summarize

    metadata = read_metadata(args.file)
    arrays = read_frames(args.file)
    settings = CheckSettings(distance_factor=args.distance_factor, nac_translation_ratio=args.nac_translation_ratio)
    summary = summarize(arrays, metadata, settings)
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary, args.file))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from exsnn.data.exporters import EXPORTERS, export_format_for
    from exsnn.data.frame import FrameArrays

    fmt = args.format or export_format_for(args.destination)
    metadata = read_metadata(args.file)
    arrays: FrameArrays = read_frames(args.file)
    options = {"units": args.units} if fmt == "extxyz" else {}
    EXPORTERS[fmt](arrays, metadata, args.destination, overwrite=args.overwrite, **options)
    print(f"exported {arrays.n_frames} frames from {args.file} to {args.destination} [{fmt}]")
    return 0


def run_filter(args: argparse.Namespace) -> int:
    from exsnn.data.check import check_frames

    destination = Path(args.destination)
    if destination.exists() and not args.overwrite:
        raise DataError(destination, "file", "already exists (pass --overwrite)")
    kinds = {kind.strip() for kind in args.drop.split(",") if kind.strip()}
    unknown = sorted(kinds - set(PROBLEM_KINDS))
    if unknown:
        raise ConfigurationError(f"unknown problem kind {unknown[0]!r}; expected a comma-separated list of "
                                 f"{', '.join(PROBLEM_KINDS)}", source="--drop")
    metadata, arrays = read_metadata(args.file), read_frames(args.file)
    settings = CheckSettings(distance_factor=args.distance_factor, nac_translation_ratio=args.nac_translation_ratio)
    dropped = {p.frame for p in check_frames(arrays, settings) if p.kind in kinds}
    if not args.keep_failed:
        dropped |= {k for k, record in enumerate(arrays.provenance) if json.loads(record).get("failure")}
    kept = [k for k in range(arrays.n_frames) if k not in dropped]
    selected = arrays.select(kept)
    selected.provenance = [json.dumps({**json.loads(record), "filtered_from": str(args.file), "original_frame": k})
                           for record, k in zip(selected.provenance, kept)]
    destination.unlink(missing_ok=True)
    append_frames(destination, selected, metadata)
    print(f"kept {len(kept)} of {arrays.n_frames} frames from {args.file} in {destination} "
          f"(dropped {len(dropped)}: {', '.join(sorted(kinds))}{'' if args.keep_failed else ', failed labelling'})")
    return 0
