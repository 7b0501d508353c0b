"""Adiabatic energies, forces and NACs from a diabatic Hamiltonian and its derivatives.

Given H (B, N, N) real symmetric and dH/dR (B, N, N, n, 3), diagonalise H = U diag(E) U^T. Then
forces F_k = -U_k^T dH U_k and NACs d_ij = U_i^T dH U_j / (E_j - E_i) (Hellmann-Feynman, exact for a
diabatic model). Eigenvector signs are arbitrary; dynamics aligns them with the previous step.
"""

from __future__ import annotations

import torch

from exsnn.data.properties import state_pairs
from exsnn.potentials.base import PotentialOutput


def adiabatic_from_diabatic(
    hamiltonian: torch.Tensor,
    gradient: torch.Tensor,
    states: torch.Tensor | None,
    all_forces: bool,
    nacs: bool,
) -> PotentialOutput:
    """hamiltonian (B, N, N), gradient dH/dR (B, N, N, n, 3) -> PotentialOutput (see exsnn.potentials.base)."""
    energies, vectors = torch.linalg.eigh(hamiltonian)
    N = hamiltonian.shape[-1]
    # coupling matrix in the adiabatic basis: G_ij = U_i^T dH U_j, (B, N, N, n, 3)
    coupling = torch.einsum("bki,bklxc,blj->bijxc", vectors, gradient, vectors)
    diagonal = torch.diagonal(coupling, dim1=1, dim2=2).permute(0, 3, 1, 2)  # (B, N, n, 3)
    out = PotentialOutput(energies=energies)
    if states is not None:
        out.forces = -diagonal[torch.arange(len(states), device=states.device), states]
    if all_forces:
        out.all_forces = -diagonal
    if nacs and N > 1:
        pairs = torch.tensor(state_pairs(N), device=hamiltonian.device)
        i, j = pairs[:, 0], pairs[:, 1]
        gaps = (energies[:, j] - energies[:, i])[:, :, None, None]
        out.nacs = coupling[:, i, j] / gaps
    return out
