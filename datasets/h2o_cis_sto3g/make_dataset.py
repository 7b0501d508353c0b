"""Regenerate h2o_cis_sto3g.xyz: water at displaced geometries, S0-S2 by TDA-HF (CIS) / STO-3G in PySCF.

Run from the project root:  .venv/bin/python datasets/h2o_cis_sto3g/make_dataset.py
Energies and analytic gradients (forces) of all three states; no NACs or dipoles (see README.md beside this file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyscf
from pyscf import gto, scf

from exsnn.data import DatasetMetadata, Frame, FrameArrays
from exsnn.data.exporters import export_extxyz

N_FRAMES = 24
N_STATES = 3
SEED = 20261124
DISPLACEMENT_BOHR = 0.08  # standard deviation of the Gaussian displacement of every Cartesian coordinate
EQUILIBRIUM_BOHR = np.array([[0.0, 0.0, 0.2217], [0.0, 1.4309, -0.8867], [0.0, -1.4309, -0.8867]])
NUMBERS = np.array([8, 1, 1])


def label(positions: np.ndarray) -> Frame:
    mol = gto.M(atom=[(int(z), tuple(r)) for z, r in zip(NUMBERS, positions)], unit="Bohr", basis="sto-3g", verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-11
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    td = mf.TDA()
    td.nstates = N_STATES + 1  # two spare roots make the Davidson solver robust; only the lowest are kept
    td.conv_tol = 1e-7
    td.max_cycle = 200
    td.kernel()
    if not all(td.converged[: N_STATES - 1]):
        raise RuntimeError("TDA roots did not converge")
    energies = np.concatenate([[mf.e_tot], mf.e_tot + td.e[: N_STATES - 1]])
    gradients = [mf.nuc_grad_method().kernel()]
    td_grad = td.nuc_grad_method()
    gradients += [td_grad.kernel(state=k) for k in range(1, N_STATES)]
    return Frame(
        numbers=NUMBERS,
        positions=positions,
        energies=energies,
        forces=-np.stack(gradients, axis=1),
        charge=0,
        multiplicity=1,
    )


def main() -> None:
    rng = np.random.default_rng(SEED)
    frames = [label(EQUILIBRIUM_BOHR + rng.normal(0.0, DISPLACEMENT_BOHR, size=(3, 3))) for _ in range(N_FRAMES)]
    metadata = DatasetMetadata(n_states=N_STATES, method="TDA-HF (CIS)", basis="STO-3G", program="PySCF", program_version=pyscf.__version__)
    out = Path(__file__).with_name("h2o_cis_sto3g.xyz")
    export_extxyz(
        FrameArrays.from_frames([f.validated(N_STATES, "generator", "frame") for f in frames], N_STATES),
        metadata,
        out,
        overwrite=True,
    )
    print(f"wrote {len(frames)} frames to {out}")


if __name__ == "__main__":
    main()
