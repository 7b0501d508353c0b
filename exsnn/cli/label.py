"""`exsnn label INPUT -o DATA.h5 --method tda-hf/sto-3g`: label geometries with PySCF, resumable and parallel."""

from __future__ import annotations

import argparse

from exsnn.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("label", help="label every geometry of an XYZ/HDF5 file with PySCF into an exsnn dataset")
    p.add_argument("input", help="XYZ/extended XYZ (Angstrom) or exsnn HDF5 dataset (Bohr)")
    p.add_argument("-o", "--output", required=True, help="exsnn HDF5 dataset to write or continue")
    p.add_argument("--method", required=True, help="EXCITED-XC/BASIS (tda-hf/sto-3g, tda-b3lyp/6-31g*, tddft-pbe0/def2-svp) "
                   "or casscf(NELECAS,NCAS)/BASIS for state-averaged CASSCF")
    p.add_argument("--states", type=int, help="number of states including S0 (default 3)")
    p.add_argument("--charge", type=int, help="total charge (default 0)")
    p.add_argument("--nacs", choices=("analytic", "overlap", "none"),
                   help="analytic (default): every pair; overlap: finite differences of (pseudo-)wavefunction overlaps "
                        "at 6n displaced geometries (the reference); none")
    p.add_argument("--no-etf", dest="etf", action="store_false", help="NACs without electron-translation factors")
    p.add_argument("--no-stability-check", dest="check_stability", action="store_false",
                   help="skip the internal stability analysis of each SCF solution (saves about one TDA solve per geometry)")
    p.add_argument("--reference", help="geometry file whose first structure's states every frame is matched to by "
                   "wavefunction overlaps: root flips are recorded and NAC phases follow the reference (TDA/TDDFT)")
    p.add_argument("--executor", default="local", help="serial, local[:N], dask-local[:N] or dask:ADDRESS (default local)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (default %(default)s)")
    p.add_argument("--max-attempts", type=int, default=3, help="a geometry whose worker process dies (killed, out of memory) "
                   "is tried this many times, then recorded as a failed frame (default %(default)s)")
    p.add_argument("--retry-failed", action="store_true", help="label again the geometries whose earlier attempt failed")
    p.add_argument("--commit-every", type=int, default=8, help="frames per atomic commit (default %(default)s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from exsnn.data.geometries import read_structures
    from exsnn.errors import ConfigurationError
    from exsnn.qm.labelling import label_file
    from exsnn.qm.settings import parse_qm_spec
    from exsnn.qm.validation import check_geometry, check_method

    for name in ("threads", "max_attempts", "commit_every"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"must be at least 1, got {getattr(args, name)}", source="--" + name.replace("_", "-"))
    settings = parse_qm_spec(args.method, n_states=args.states, charge=args.charge, nacs=args.nacs,
                             etf=None if args.etf else False, threads=args.threads,
                             check_stability=None if args.check_stability else False)
    # everything that would fail is found before the output file is created
    structures = read_structures(args.input)
    for frame, (numbers, positions, _) in enumerate(structures):
        check_geometry(numbers, positions, args.input, frame)
    check_method(settings, structures[0][0], structures[0][1])
    summary = label_file(args.input, args.output, settings, executor=args.executor, threads=args.threads,
                         commit_every=args.commit_every, progress=not args.no_progress, reference=args.reference,
                         max_attempts=args.max_attempts, retry_failed=args.retry_failed)
    if args.json:
        print_json(summary.__dict__)
        return 0
    print(f"exsnn label: {summary.labelled} labelled, {summary.failed} failed, {summary.skipped} already in {summary.output} "
          f"({summary.seconds:.1f} s, {settings.method_label}/{settings.basis}, executor {args.executor})")
    for index, reason in summary.failures.items():
        print(f"  geometry {index}: {reason}")
    return 0
