"""Multi-state equivariant network on SchNetPack 2 representations (PaiNN by default, SO3net selectable).

From one shared representation of B molecules (A atoms, N states, P = N(N-1)/2 pairs, Pd = N(N+1)/2):

* energies (B, N), Hartree: atomwise MLP on the scalar features, scaled by the training-set spread and shifted by
  the per-state mean energy per atom, summed over atoms; forces by automatic differentiation;
* smooth couplings h (A, P, 3), Hartree/Bohr: a gated equivariant MLP on scalar and vector features gives one
  vector per atom and pair; the target is h_ij = (E_j - E_i) d_ij, which stays finite at degeneracies (SPaiNN
  databases store `smooth_nacs` = (E_i - E_j) d_ij, the opposite sign: exsnn.data.exporters writes theirs). Inputs are
  interatomic vectors only, so h rotates with the molecule, ignores translations and permutes with the atoms;
* NACs (A, P, 3), 1/Bohr, recovered at inference with a regularised gap:

      d_ij = h_ij / (s * sqrt(dE^2 + eps^2)),  dE = E_j - E_i,  s = sign(dE) (+1 at dE = 0)

  which equals h_ij / dE when |dE| >> eps and stays finite (|d| <= |h| / eps) at a degeneracy;
* optional dipoles (B, Pd, 3), e*Bohr: per atom a scalar charge-like and a vector term per state pair,
  mu_k = sum_a q_ak (r_a - r_centre) + v_ak (permanent dipoles on the diagonal pairs, transition dipoles elsewhere).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import schnetpack as spk
import schnetpack.properties as structure
import torch
from torch import nn

from exsnn.data.properties import dipole_pairs, n_dipole_pairs, n_pairs, state_pairs
from exsnn.errors import ConfigurationError


@dataclass
class ArchitectureConfig:
    """The network's shape: what a user chooses (defaults live here only; training nests this as `network`)."""

    representation: str = "painn"  # "painn" or "so3net"
    n_atom_basis: int = 64
    n_interactions: int = 3
    n_rbf: int = 20
    cutoff: float = 10.0  # Bohr
    dipoles: bool = False
    nac_epsilon: float = 1e-3  # Hartree, gap regulariser of d = h / dE

    def __post_init__(self) -> None:
        if self.representation not in ("painn", "so3net"):
            raise ConfigurationError(f"unknown representation {self.representation!r}; expected 'painn' or 'so3net'",
                                     where="representation")
        for name in ("n_atom_basis", "n_interactions", "n_rbf"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigurationError(f"must be a positive integer, got {getattr(self, name)!r}", where=name)
        if not self.cutoff > 0 or not self.nac_epsilon > 0:
            raise ConfigurationError("cutoff and nac_epsilon must be positive", where="cutoff/nac_epsilon")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class NetworkConfig(ArchitectureConfig):
    """The architecture plus what training learns about the labels: the number of states and the statistics the
    output layers are scaled with (atomic units). Stored in every model file."""

    n_states: int
    energy_mean_per_atom: list[float] = field(default_factory=list)  # (N,) Hartree
    energy_std_per_atom: float = 1.0  # Hartree
    coupling_scale: float = 1.0  # typical |h| per atom, Hartree/Bohr
    elements: list[int] = field(default_factory=list)  # atomic numbers seen in training (empty: not recorded)


def build_representation(config: NetworkConfig) -> nn.Module:
    radial = spk.nn.GaussianRBF(n_rbf=config.n_rbf, cutoff=config.cutoff)
    cutoff_fn = spk.nn.CosineCutoff(config.cutoff)
    if config.representation == "painn":
        return spk.representation.PaiNN(
            n_atom_basis=config.n_atom_basis, n_interactions=config.n_interactions, radial_basis=radial, cutoff_fn=cutoff_fn
        )
    if config.representation == "so3net":
        return spk.representation.SO3net(
            n_atom_basis=config.n_atom_basis, n_interactions=config.n_interactions, lmax=1, radial_basis=radial,
            cutoff_fn=cutoff_fn, return_vector_representation=True,
        )
    raise ConfigurationError(f"unknown representation {config.representation!r}; expected 'painn' or 'so3net'")


class MultiStateNetwork(nn.Module):
    """Energies, forces, smooth couplings / NACs and optional dipoles of N states (see module docstring)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.n_states < 1:
            raise ConfigurationError("n_states must be at least 1", where="n_states")
        self.config = config
        N, F = config.n_states, config.n_atom_basis
        self.distances = spk.atomistic.PairwiseDistances()
        self.representation = build_representation(config)
        self.energy_head = spk.nn.build_mlp(n_in=F, n_out=N, n_layers=2)
        self.nac_head = spk.nn.build_gated_equivariant_mlp(n_in=F, n_out=n_pairs(N), n_layers=2) if N > 1 else None
        self.dipole_head = spk.nn.build_gated_equivariant_mlp(n_in=F, n_out=n_dipole_pairs(N), n_layers=2) if config.dipoles else None
        mean = config.energy_mean_per_atom or [0.0] * N
        self.register_buffer("energy_mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("energy_std", torch.tensor(config.energy_std_per_atom, dtype=torch.float64))
        self.register_buffer("coupling_scale", torch.tensor(config.coupling_scale, dtype=torch.float64))
        pairs = torch.tensor(state_pairs(N), dtype=torch.long).reshape(-1, 2)
        self.register_buffer("pair_i", pairs[:, 0])
        self.register_buffer("pair_j", pairs[:, 1])
        self.register_buffer("dipole_pairs", torch.tensor(dipole_pairs(N), dtype=torch.long).reshape(-1, 2))

    @property
    def n_states(self) -> int:
        return self.config.n_states

    def features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the representation on a SchNetPack-style batch (positions must already require grad for forces)."""
        inputs = dict(batch)
        inputs = self.distances(inputs)
        return self.representation(inputs)

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        forces: str | None = "all",
        states: torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Predict for a batch.

        forces: "all" -> forces (A, N, 3) of every state (N backward passes); "selected" -> forces (A, 3) of
        `states[b]` for each molecule b (one backward pass for the whole batch); None -> no forces.
        Returns energies (B, N), smooth_nacs (A, P, 3), nacs (A, P, 3), dipoles (B, Pd, 3) when configured,
        and forces as asked. `create_graph` keeps the graph of the forces (training).
        """
        positions = batch[structure.R]
        if forces is not None and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
            batch = {**batch, structure.R: positions}
        with torch.set_grad_enabled(torch.is_grad_enabled() or forces is not None):
            out = self.predict(batch)
            add_forces(out, positions, forces, states, create_graph, self.n_states)
        return out

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything but the forces: energies (B, N), smooth_nacs and nacs (A, P, 3), dipoles (B, Pd, 3) when
        configured (the part that `torch.compile` may compile; forces are derivatives of its energies)."""
        positions = batch[structure.R]
        inputs = self.features(batch)
        scalar = inputs["scalar_representation"]
        idx_m = batch[structure.idx_m]
        n_molecules = int(batch[structure.n_atoms].shape[0])
        dtype = scalar.dtype
        atomic = self.energy_head(scalar) * self.energy_std.to(dtype) + self.energy_mean.to(dtype)
        energies = spk.nn.scatter_add(atomic, idx_m, dim_size=n_molecules)
        out: dict[str, torch.Tensor] = {"energies": energies}
        if self.nac_head is not None:
            _, vectors = self.nac_head((scalar, inputs["vector_representation"]))
            smooth = vectors.permute(0, 2, 1) * self.coupling_scale.to(dtype)  # (A, P, 3)
            out["smooth_nacs"] = smooth
            out["nacs"] = self.nacs_from_smooth(smooth, energies, idx_m)
        if self.dipole_head is not None:
            charges, vectors = self.dipole_head((scalar, inputs["vector_representation"]))
            centre = spk.nn.scatter_add(positions, idx_m, dim_size=n_molecules) / batch[structure.n_atoms][:, None].to(dtype)
            relative = positions - centre[idx_m]
            atomwise = charges[:, None, :] * relative[:, :, None] + vectors  # (A, 3, Pd)
            out["dipoles"] = spk.nn.scatter_add(atomwise, idx_m, dim_size=n_molecules).permute(0, 2, 1)
        return out

    def nacs_from_smooth(self, smooth: torch.Tensor, energies: torch.Tensor, idx_m: torch.Tensor) -> torch.Tensor:
        """d = h / (sign(dE) sqrt(dE^2 + eps^2)) per atom and pair (see module docstring)."""
        gap = energies[:, self.pair_j] - energies[:, self.pair_i]  # (B, P)
        sign = torch.where(gap < 0, -1.0, 1.0).to(gap.dtype)
        denominator = sign * torch.sqrt(gap**2 + self.config.nac_epsilon**2)
        return smooth / denominator[idx_m][:, :, None]


def add_forces(out: dict[str, torch.Tensor], positions: torch.Tensor, forces: str | None, states: torch.Tensor | None,
               create_graph: bool, n_states: int) -> None:
    """Forces as `MultiStateNetwork.forward` describes them, by automatic differentiation of out["energies"] with
    respect to `positions` (A, 3) (which must require grad), written into `out`."""
    energies = out["energies"]
    if forces == "all":
        out["forces"] = torch.stack(
            [
                -torch.autograd.grad(energies[:, s].sum(), positions, create_graph=create_graph, retain_graph=True)[0]
                for s in range(n_states)
            ],
            dim=1,
        )
    elif forces == "selected":
        if states is None:
            raise ValueError("forces='selected' needs the selected state of every molecule")
        selected = energies.gather(1, states.to(energies.device).long()[:, None]).sum()
        out["forces"] = -torch.autograd.grad(selected, positions, create_graph=create_graph, retain_graph=create_graph)[0]
