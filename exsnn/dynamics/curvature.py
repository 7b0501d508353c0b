"""Time-derivative couplings from the curvature of the energy gaps (no NACs needed).

For each state pair i < j with gap dV = |E_j - E_i|, the Baeck-An approximation gives the time-derivative coupling

    sigma_ij(t) = 1/2 sqrt( (d^2 dV / dt^2) / dV )   where the radicand is positive, 0 elsewhere

(Baeck and An, J. Chem. Phys. 146, 054107 (2017)); with fewest switches this is curvature-driven surface hopping,
kappa-TSH (Shu, Zhang, Chen, Sun, Huang and Truhlar, J. Chem. Theory Comput. 18, 1320 (2022)), which they found to
reproduce NAC-based FSSH for a set of molecules. The second derivative is the backward three-point difference of the
gaps at the last three nuclear steps, (dV(t) - 2 dV(t - dt) + dV(t - 2 dt)) / dt^2: no coupling before the third
step. Hops are rescaled along the velocity (there is no coupling vector).

It frees the dynamics from the network's coupling head: what drives the hops is then the learned energies, which are
learned much better near intersections than the singular NACs (see benchmarks/bench_campaign.py).
"""

from __future__ import annotations

import torch

from exsnn.data.properties import state_pairs


def pair_gaps(energies: torch.Tensor) -> torch.Tensor:
    """|E_j - E_i| (B, P) for the pairs i < j in exsnn order, from energies (B, N) Hartree."""
    pairs = torch.as_tensor(state_pairs(energies.shape[1]), device=energies.device, dtype=torch.long).reshape(-1, 2)
    return (energies[:, pairs[:, 1]] - energies[:, pairs[:, 0]]).abs()


def curvature_couplings(gaps: torch.Tensor, previous: torch.Tensor, before: torch.Tensor, dt: float) -> torch.Tensor:
    """sigma (B, P) in 1/(atomic time unit) from the gaps (B, P) Hartree at t, t - dt and t - 2 dt (NaN where a step
    is not known yet: the coupling is then 0)."""
    curvature = (gaps - 2.0 * previous + before) / (dt * dt)
    ratio = curvature / gaps.clamp_min(1e-12)
    sigma = 0.5 * torch.sqrt(ratio.clamp_min(0.0))
    return torch.where(torch.isfinite(sigma), sigma, torch.zeros_like(sigma))
