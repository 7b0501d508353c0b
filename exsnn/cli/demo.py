"""`exsnn demo`: the main job on the built-in default data (grows with the product).

Today: imports the shipped H2O CIS/STO-3G set into an exsnn HDF5 dataset, runs the data check, prints the
summary, exports a SPaiNN database, and says where everything was written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exsnn.data.exporters import export_spainn_db
from exsnn.data.importers import import_file
from exsnn.data.store import append_frames, read_frames, read_metadata
from exsnn.data.summary import format_summary, summarize

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "datasets" / "h2o_cis_sto3g" / "h2o_cis_sto3g.xyz"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the built-in default data")
    p.add_argument("--input", default=str(DEFAULT_DATASET), help="data to import (default: the shipped H2O CIS/STO-3G set)")
    p.add_argument("--output", default="exsnn-output/demo", help="folder for the results (default %(default)s)")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "dataset.h5"
    dataset.unlink(missing_ok=True)
    imported = import_file(args.input)
    append_frames(dataset, imported.frames, imported.metadata, source=args.input)
    arrays, metadata = read_frames(dataset), read_metadata(dataset)
    print(format_summary(summarize(arrays, metadata), str(dataset)))
    spainn = out / "dataset_spainn.db"
    export_spainn_db(arrays, metadata, spainn, overwrite=True)
    print(f"\nexsnn demo: imported {arrays.n_frames} frames from {args.input}")
    print(f"  HDF5 dataset:   {dataset}")
    print(f"  SPaiNN export:  {spainn}")
    return 0
