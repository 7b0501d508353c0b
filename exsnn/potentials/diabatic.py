"""Adiabatic energies, forces and NACs from a diabatic Hamiltonian and its derivatives.

Given H (B, N, N) real symmetric and dH/dR (B, N, N, n, 3), diagonalise H = U diag(E) U^T. Then
forces F_k = -U_k^T dH U_k and NACs d_ij = U_i^T dH U_j / (E_j - E_i) (Hellmann-Feynman, exact for a
diabatic model). Eigenvector signs are arbitrary; dynamics aligns them with the previous step.
Two-state models use the closed-form 2x2 eigensystem (much faster than a batched LAPACK call).
"""

from __future__ import annotations

import torch

from exsnn.data.properties import state_pairs
from exsnn.potentials.base import PotentialOutput


def _half_angle(delta: torch.Tensor, b: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(phi/2) >= 0 and sin(phi/2) of phi = atan2(b, delta), radius = sqrt(delta^2 + b^2), from square roots and
    quotients only: their rounding does not depend on where a structure sits in the batch (torch's vectorised and
    scalar atan2 round differently), and no cancellation: the larger of the two is sqrt((radius + |delta|) / 2 radius),
    the smaller |b| / (2 radius larger)."""
    twice = 2.0 * radius
    defined = radius > 0  # delta = b = 0: phi = 0
    larger = torch.where(defined, torch.sqrt((radius + delta.abs()) / twice), 1.0)
    smaller = torch.where(defined, b.abs() / (twice * larger), 0.0)
    right = delta >= 0  # |phi| <= pi/2: cos(phi/2) is the larger
    return torch.where(right, larger, smaller), torch.copysign(torch.where(right, smaller, larger), b)


def two_state_components(
    a: torch.Tensor, b: torch.Tensor, d: torch.Tensor, h00: torch.Tensor, h01: torch.Tensor, h11: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Closed-form 2x2 case from the matrix elements H = [[a, b], [b, d]] (B,) and dH = [[h00, h01], [h01, h11]]
    (B, X): lower and upper energies (B,) each, eigenvectors U (B, 2, 2) and (G_00, G_01, G_11) (B, X) of
    G = U^T dH U, and the gap E_1 - E_0 (B,).

    With H = m + [[delta, b], [b, -delta]], delta = R cos(phi), b = R sin(phi): the lower eigenvector is
    (-sin(phi/2), cos(phi/2)), the upper (cos(phi/2), sin(phi/2)).
    """
    half_diff = 0.5 * (a - d)
    radius = torch.sqrt(half_diff**2 + b**2)
    mean = 0.5 * (a + d)
    c, s = (t[:, None] for t in _half_angle(half_diff, b, radius))
    cc, ss, sc = c * c, s * s, s * c
    g00 = ss * h00 - 2 * sc * h01 + cc * h11
    g11 = cc * h00 + 2 * sc * h01 + ss * h11
    g01 = sc * (h11 - h00) + (cc - ss) * h01
    cv, sv = c[:, 0], s[:, 0]
    vectors = torch.stack([-sv, cv, cv, sv], -1).view(len(cv), 2, 2)  # columns: lower (-s, c), upper (c, s)
    lower, upper = mean - radius, mean + radius
    return lower, upper, vectors, (g00, g01, g11), upper - lower


def _two_state(hamiltonian: torch.Tensor, gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies (B, 2), eigenvectors U (B, 2, 2) and G = U^T dH U (B, 2, 2, X) from H (B, 2, 2), dH (B, 2, 2, X)."""
    lower, upper, vectors, (g00, g01, g11), _ = two_state_components(
        hamiltonian[:, 0, 0], hamiltonian[:, 0, 1], hamiltonian[:, 1, 1], gradient[:, 0, 0], gradient[:, 0, 1], gradient[:, 1, 1])
    coupling = torch.stack([g00, g01, g01, g11], 1).view(len(g00), 2, 2, -1)
    return torch.stack([lower, upper], dim=-1), vectors, coupling


def adiabatic_from_diabatic(
    hamiltonian: torch.Tensor,
    gradient: torch.Tensor,
    states: torch.Tensor | None,
    all_forces: bool,
    nacs: bool,
) -> PotentialOutput:
    """hamiltonian (B, N, N), gradient dH/dR (B, N, N, n, 3) -> PotentialOutput (see exsnn.potentials.base)."""
    N = hamiltonian.shape[-1]
    B = hamiltonian.shape[0]
    if N == 2:
        energies, vectors, coupling = _two_state(hamiltonian, gradient.reshape(B, 2, 2, -1))
    else:
        energies, vectors = torch.linalg.eigh(hamiltonian)
        # coupling matrix in the adiabatic basis: G_ij = U_i^T dH U_j, (B, N, N, n*3)
        coupling = torch.einsum("bki,bklx,blj->bijx", vectors, gradient.reshape(B, N, N, -1), vectors)
    coupling = coupling.reshape(B, N, N, *gradient.shape[3:])
    diagonal = torch.diagonal(coupling, dim1=1, dim2=2).movedim(-1, 1)  # (B, N, n, 3)
    out = PotentialOutput(energies=energies, state_vectors=vectors)
    if states is not None and N == 2:
        out.forces = -torch.where((states == 0).view(B, *([1] * (diagonal.dim() - 2))), diagonal[:, 0], diagonal[:, 1])
    elif states is not None:
        out.forces = -diagonal[torch.arange(B, device=states.device), states]
    if all_forces:
        out.all_forces = -diagonal
    if nacs and N > 1:
        pairs = torch.tensor(state_pairs(N), device=hamiltonian.device)
        i, j = pairs[:, 0], pairs[:, 1]
        gaps = (energies[:, j] - energies[:, i])[:, :, None, None]
        out.nacs = coupling[:, i, j] / gaps
    return out
