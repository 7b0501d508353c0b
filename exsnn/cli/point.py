"""`exsnn point --potential SPEC GEOMETRY`: energies, gradients and NACs of every frame of a geometry file."""

from __future__ import annotations

import argparse
from pathlib import Path

from exsnn.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    from exsnn.potentials.spec import describe_prefixes

    p = subparsers.add_parser("point", help="energies, gradients and NACs of every frame of an XYZ or exsnn HDF5 file",
                              description="Potentials (SPEC):\n" + describe_prefixes(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--potential", required=True, metavar="SPEC", help="a potential spec (listed above)")
    p.add_argument("geometry", help="XYZ/extended XYZ (Angstrom) or exsnn HDF5 dataset (Bohr)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per frame")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from exsnn.data.properties import state_pairs
    from exsnn.dynamics.initial_conditions import from_file, read_numbers
    from exsnn.errors import ElectronicStructureError
    from exsnn.potentials.spec import load_potential

    potential = load_potential(args.potential, Path.cwd(), args.device, numbers=read_numbers(args.geometry))
    positions, _ = from_file(args.geometry, potential.numbers.cpu().numpy())
    out = potential.compute(positions.to(potential.device), all_forces=True, nacs=True)
    energies = out.energies.cpu().numpy()
    failed = [k for k in range(len(energies)) if not np.all(np.isfinite(energies[k]))]
    if failed:  # the potential said why (warning); nothing half-valid is printed
        raise ElectronicStructureError(f"the potential failed at frame(s) {failed}", source=args.geometry)
    gradients = -out.all_forces.cpu().numpy()  # type: ignore[union-attr]
    nacs = out.nacs.cpu().numpy() if out.nacs is not None else np.zeros((len(energies), 0, potential.n_atoms, 3))
    if args.json:
        frames = [
            {"energies": energies[k].tolist(), "gradients": gradients[k].tolist(), "nacs": nacs[k].tolist()}
            for k in range(len(energies))
        ]
        print_json(frames)
        return 0
    pairs = state_pairs(potential.n_states)
    for k in range(len(energies)):
        print(f"frame {k}: energies (Hartree) " + " ".join(f"{e:.8f}" for e in energies[k]))
        for s in range(potential.n_states):
            print(f"  |gradient| S{s}: {np.linalg.norm(gradients[k, s]):.6e} Hartree/Bohr")
        for p, (i, j) in enumerate(pairs):
            print(f"  |NAC| {i}{j}: {np.linalg.norm(nacs[k, p]):.6e} 1/Bohr")
    return 0
