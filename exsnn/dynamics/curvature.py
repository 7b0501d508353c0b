"""Time-derivative couplings from the curvature of the energy gaps (no NACs needed).

For each state pair i < j with gap dV = |E_j - E_i|, the Baeck-An approximation gives the time-derivative coupling

    sigma_ij(t) = 1/2 sqrt( (d^2 dV / dt^2) / dV )   where the radicand is positive, 0 elsewhere

(Baeck and An, J. Chem. Phys. 146, 054107 (2017)); with fewest switches this is curvature-driven surface hopping,
kappa-TSH (Shu, Zhang, Chen, Sun, Huang and Truhlar, J. Chem. Theory Comput. 18, 1320 (2022)), which they found to
reproduce NAC-based FSSH for a set of molecules. The second derivative is the backward three-point difference of the
gaps at the last three nuclear steps, (dV(t) - 2 dV(t - dt) + dV(t - 2 dt)) / dt^2: no coupling before the third
step. Hops are rescaled along the velocity (there is no coupling vector).

Use it when NACs are missing or expensive (on-the-fly methods without analytic NACs); it is an approximation with
known limits, measured by benchmarks/bench_curvature_couplings.py (`[integrator] couplings = "curvature"`, rescale
along the velocity):

* exact for a Landau-Zener crossing (linear diabats, constant coupling; tests/test_curvature_couplings.py);
* it gives no coupling where the gap is concave in time: on Tully's model 1 at k = 20 a.u. the integrated coupling
  over the crossing is 0.43 instead of pi/2 and the transmission on the lower state 0.83 instead of 0.51 (exact;
  NAC-based FSSH 0.52); at k = 10 it gives 0.82 (exact 0.85, NAC-based 0.84); on Tully's model 2 at k = 30 it fails
  (0.97 vs 0.34);
* on the SO2 LVC model from S2 (1000 trajectories, 20 fs) its populations differ from NAC-based FSSH by up to 0.26.
"""

from __future__ import annotations

import torch

from exsnn.data.properties import state_pairs


def pair_index(n_states: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(P, 2) long: the pairs i < j in exsnn order (build once, pass to `pair_gaps` on every step)."""
    return torch.as_tensor(state_pairs(n_states), device=device, dtype=torch.long).reshape(-1, 2)


def pair_gaps(energies: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
    """|E_j - E_i| (B, P) for the pairs i < j in exsnn order, from energies (B, N) Hartree; pairs: `pair_index`."""
    if pairs is None:
        pairs = pair_index(energies.shape[1], energies.device)
    return (energies[:, pairs[:, 1]] - energies[:, pairs[:, 0]]).abs()


def curvature_couplings(gaps: torch.Tensor, previous: torch.Tensor, before: torch.Tensor, dt: float) -> torch.Tensor:
    """sigma (B, P) in 1/(atomic time unit) from the gaps (B, P) Hartree at t, t - dt and t - 2 dt (NaN where a step
    is not known yet: the coupling is then 0)."""
    curvature = (gaps - 2.0 * previous + before) / (dt * dt)
    ratio = curvature / gaps.clamp_min(1e-12)
    sigma = 0.5 * torch.sqrt(ratio.clamp_min(0.0))
    return torch.where(torch.isfinite(sigma), sigma, torch.zeros_like(sigma))
