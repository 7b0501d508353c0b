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

  which equals h_ij / dE when |dE| >> eps and stays finite (|d| <= |h| / eps) at a degeneracy (a learned h need not
  vanish where the learned gap does);
* optional dipoles (B, Pd, 3), e*Bohr: per atom a scalar charge-like and a vector term per state pair,
  mu_k = sum_a q_ak (r_a - r_centre) + v_ak (permanent dipoles on the diagonal pairs, transition dipoles elsewhere).

With `head = "diabatic"` the energies and couplings come instead from one learned quasi-diabatic Hamiltonian
H (B, N, N), Hartree: an atomwise MLP on the scalar features gives the Pd = N(N+1)/2 upper-triangle elements (the
diagonal shifted by the per-state mean energy per atom), summed over atoms. Its eigen-decomposition H = U diag(E) U^T
gives the adiabatic energies E; with the derivatives dH/dR (Pd backward passes) the Hellmann-Feynman relations give
the forces F_k = -U_k^T dH U_k and the smooth couplings h_ij = U_i^T dH U_j = (E_j - E_i) d_ij of every pair. Near a
conical intersection h rotates around the seam and changes sign around it (the geometric phase), which one smooth
vector output per geometry cannot follow; eigenvectors of a smooth H do it exactly (the construction behind
diabatisation-by-fitting models, e.g. Guan, Zhang, Yarkony's neural-network diabatic potentials, J. Chem. Phys. 150,
101101 (2019)). Only the adiabatic labels are fitted, so H is one of many quasi-diabatic Hamiltonians consistent
with them. Its NACs are h_ij / dE with the exact gap, without the adiabatic head's regulariser: h and dE come from
one H, so this is the derivative coupling of that H's eigenvectors, singular at its own intersections as the
oracle's is (exsnn.potentials.diabatic). Regularised with eps = 1e-3 Hartree, the couplings within a few eps of the
seam were damped (to 0.7 of the exact value at a 27 meV gap, 0.35 at 10 meV) and so were the hops there: on SO2 LVC
the committees moved 0.03-0.05 too little population from S2 to S1 (benchmarks/CAMPAIGNS.md, "The coupling
regulariser").

With `diabatic_dipoles` (diabatic head and dipoles) the dipole head gives instead a quasi-diabatic dipole matrix
mu^d (B, N, N, 3) and the adiabatic dipoles are mu_ij = U_i^T mu^d U_j, tied to the same state vectors as the energies
and couplings, so the states' dipoles follow their character. Across a true seam the adiabatic states exchange
character (a bright state's transition dipole moves from one adiabat to the other); constant diabatic dipoles give
that only with crossing diabatic states, and a model whose diabatic states merely touch there must make its diabatic
dipoles change across the seam instead. (Diabatisation by multipole moments rests on the same property: the DQ-phi
method, Hoyer, Xu, Ma, Gagliardi, Truhlar, J. Chem. Phys. 141, 114104 (2014).) On SO2 LVC the dipole labels did not
stop members from learning touching states (README, issue #14): the network bends its diabatic dipoles. With indexed
couplings the diabatic transition dipoles are weighed per atom position too, with the couplings' symmetry under a
declared exchange of atoms.
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

HEADS = ("adiabatic", "diabatic")


@dataclass
class ArchitectureConfig:
    """The network's shape: what a user chooses (defaults live here only; training nests this as `network`)."""

    representation: str = "painn"  # "painn" or "so3net"
    n_atom_basis: int = 64
    n_interactions: int = 3
    n_rbf: int = 20
    cutoff: float = 10.0  # Bohr
    dipoles: bool = False
    nac_epsilon: float = 1e-3  # Hartree, gap regulariser of the adiabatic head's d = h / dE (the diabatic head's is exact)
    head: str = "adiabatic"  # "adiabatic": energy and coupling heads; "diabatic": a learned quasi-diabatic Hamiltonian
    # diabatic head: each position in the atom list has its own output for the off-diagonal elements, so that
    # couplings may be odd under the exchange of equivalent atoms (one molecule, fixed atom order)
    indexed_couplings: bool = False
    # indexed couplings with a declared symmetry: `exchange` lists pairs of atom positions (0-based) that one symmetry
    # operation of the molecule swaps, `odd_couplings` the state pairs (i < j) whose diabatic coupling changes sign
    # under it; every other element is made even under it. An odd coupling is then exactly zero at every geometry the
    # operation leaves unchanged, so the intersection seam there is a true one (see `symmetrise_couplings`).
    exchange: list[list[int]] = field(default_factory=list)
    odd_couplings: list[list[int]] = field(default_factory=list)
    # diabatic head with dipoles: the dipole head predicts quasi-diabatic dipoles, rotated into the adiabatic states by
    # the Hamiltonian's eigenvectors (module docstring)
    diabatic_dipoles: bool = False

    def __post_init__(self) -> None:
        if self.representation not in ("painn", "so3net"):
            raise ConfigurationError(f"unknown representation {self.representation!r}; expected 'painn' or 'so3net'",
                                     where="representation")
        if self.head not in HEADS:
            raise ConfigurationError(f"unknown head {self.head!r}; expected one of {HEADS}", where="head")
        if self.indexed_couplings and self.head != "diabatic":
            raise ConfigurationError("indexed couplings belong to the diabatic head (head = 'diabatic')",
                                     where="indexed_couplings")
        if self.diabatic_dipoles and not (self.dipoles and self.head == "diabatic"):
            raise ConfigurationError("diabatic dipoles need the diabatic head and dipoles (head = 'diabatic', dipoles = true)",
                                     where="diabatic_dipoles")
        self.exchange = [list(pair) for pair in self.exchange]
        self.odd_couplings = [list(pair) for pair in self.odd_couplings]
        if (self.exchange or self.odd_couplings) and not self.indexed_couplings:
            raise ConfigurationError("a coupling symmetry (exchange, odd_couplings) needs indexed couplings",
                                     where="exchange")
        if self.odd_couplings and not self.exchange:
            raise ConfigurationError("odd couplings need the exchange of atoms they are odd under", where="exchange")
        swapped = [k for pair in self.exchange for k in pair]
        if not all(_index_pair(pair) for pair in self.exchange) or len(set(swapped)) != len(swapped):
            raise ConfigurationError(f"must be pairs of different atom positions (0-based), each position at most once, "
                                     f"got {self.exchange!r}", where="exchange")
        if not all(_index_pair(pair) and pair[0] < pair[1] for pair in self.odd_couplings):
            raise ConfigurationError(f"must be state pairs [i, j] with 0 <= i < j, got {self.odd_couplings!r}",
                                     where="odd_couplings")
        for name in ("n_atom_basis", "n_interactions", "n_rbf"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigurationError(f"must be a positive integer, got {getattr(self, name)!r}", where=name)
        if not self.cutoff > 0 or not self.nac_epsilon > 0:
            raise ConfigurationError("cutoff and nac_epsilon must be positive", where="cutoff/nac_epsilon")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _index_pair(pair: Any) -> bool:
    return (isinstance(pair, list) and len(pair) == 2 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                                                              for k in pair) and pair[0] != pair[1])


def check_coupling_symmetry(exchange: list[list[int]], odd_couplings: list[list[int]], molecule: list[int],
                            n_states: int) -> None:
    """A declared exchange must swap atoms of one element inside the molecule (atomic numbers in atom order), and odd
    couplings must be pairs of existing states; ConfigurationError naming the field otherwise."""
    n = len(molecule)
    for a, b in exchange:
        if max(a, b) >= n or molecule[a] != molecule[b]:
            raise ConfigurationError(f"atoms {a} and {b} cannot be exchanged in a molecule with atomic numbers "
                                     f"{molecule} (positions 0..{n - 1}, same element needed)", where="exchange")
    for i, j in odd_couplings:
        if j >= n_states:
            raise ConfigurationError(f"state pair [{i}, {j}] does not exist with {n_states} states", where="odd_couplings")


@dataclass(kw_only=True)
class NetworkConfig(ArchitectureConfig):
    """The architecture plus what training learns about the labels: the number of states and the statistics the
    output layers are scaled with (atomic units). Stored in every model file."""

    n_states: int
    energy_mean_per_atom: list[float] = field(default_factory=list)  # (N,) Hartree
    energy_std_per_atom: float = 1.0  # Hartree
    coupling_scale: float = 1.0  # typical |h| per atom, Hartree/Bohr
    elements: list[int] = field(default_factory=list)  # atomic numbers seen in training (empty: not recorded)
    molecule: list[int] = field(default_factory=list)  # atomic numbers in atom order (indexed couplings only)


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
        self.diabatic = config.head == "diabatic"
        if config.indexed_couplings and not config.molecule:
            raise ConfigurationError("indexed couplings need the molecule's atoms in order", where="molecule")
        check_coupling_symmetry(config.exchange, config.odd_couplings, config.molecule, config.n_states)
        if self.diabatic:  # indexed couplings: one off-diagonal output per atom position (P * n more outputs)
            extra = n_pairs(N) * len(config.molecule) if config.indexed_couplings else 0
            self.hamiltonian_head = spk.nn.build_mlp(n_in=F, n_out=n_dipole_pairs(N) + extra, n_layers=2)
            self.energy_head = self.nac_head = None
        else:
            self.hamiltonian_head = None
            self.energy_head = spk.nn.build_mlp(n_in=F, n_out=N, n_layers=2)
            self.nac_head = spk.nn.build_gated_equivariant_mlp(n_in=F, n_out=n_pairs(N), n_layers=2) if N > 1 else None
        # diabatic dipoles with indexed couplings: one output per atom position for the transition dipoles (P * n more)
        extra = n_pairs(N) * len(config.molecule) if config.diabatic_dipoles and config.indexed_couplings else 0
        self.dipole_head = (spk.nn.build_gated_equivariant_mlp(n_in=F, n_out=n_dipole_pairs(N) + extra, n_layers=2)
                            if config.dipoles else None)
        mean = config.energy_mean_per_atom or [0.0] * N
        self.register_buffer("energy_mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("energy_std", torch.tensor(config.energy_std_per_atom, dtype=torch.float64))
        self.register_buffer("coupling_scale", torch.tensor(config.coupling_scale, dtype=torch.float64))
        pairs = torch.tensor(state_pairs(N), dtype=torch.long).reshape(-1, 2)
        self.register_buffer("pair_i", pairs[:, 0])
        self.register_buffer("pair_j", pairs[:, 1])
        self.register_buffer("dipole_pairs", torch.tensor(dipole_pairs(N), dtype=torch.long).reshape(-1, 2))
        image = list(range(len(config.molecule)))  # the atom position each position is swapped with
        for a, b in config.exchange:
            image[a], image[b] = b, a
        parity = [-1.0 if [i, j] in config.odd_couplings else 1.0 for i, j in state_pairs(N)]
        self.register_buffer("exchange_image", torch.tensor(image, dtype=torch.long), persistent=False)
        self.register_buffer("coupling_parity", torch.tensor(parity, dtype=torch.float64), persistent=False)
        # diabatic head: column of the upper-triangle element behind each entry of H (N*N,), and which are diagonal
        triangle = {pair: k for k, pair in enumerate(dipole_pairs(N))}
        self.register_buffer("hamiltonian_columns", torch.tensor(
            [triangle[(min(r, c), max(r, c))] for r in range(N) for c in range(N)], dtype=torch.long), persistent=False)
        self.register_buffer("hamiltonian_diagonal", torch.tensor([i == j for i, j in dipole_pairs(N)], dtype=torch.bool),
                             persistent=False)

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
        derivatives = forces is not None or (self.diabatic and self.n_states > 1)  # diabatic couplings need dH/dR
        if derivatives and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
            batch = {**batch, structure.R: positions}
        with torch.set_grad_enabled(torch.is_grad_enabled() or derivatives):
            out = self.predict(batch)
            if self.diabatic:
                add_diabatic_derivatives(out, positions, batch[structure.idx_m], forces, states, create_graph, self)
            else:
                add_forces(out, positions, forces, states, create_graph, self.n_states)
        return out

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Everything but the forces: energies (B, N), smooth_nacs and nacs (A, P, 3), dipoles (B, Pd, 3) when
        configured (the part that `torch.compile` may compile; forces are derivatives of its energies). The diabatic
        head gives instead energies, hamiltonian (B, N, N), hamiltonian_elements (B, Pd) and state_vectors U (B, N, N):
        its couplings and forces need dH/dR (`forward`); with diabatic dipoles also diabatic_dipoles (B, Pd, 3)."""
        positions = batch[structure.R]
        inputs = self.features(batch)
        scalar = inputs["scalar_representation"]
        idx_m = batch[structure.idx_m]
        n_molecules = int(batch[structure.n_atoms].shape[0])
        dtype = scalar.dtype
        if self.hamiltonian_head is not None:
            out = self.diabatic_energies(scalar, idx_m, n_molecules)
        else:
            atomic = self.energy_head(scalar) * self.energy_std.to(dtype) + self.energy_mean.to(dtype)
            out = {"energies": spk.nn.scatter_add(atomic, idx_m, dim_size=n_molecules)}
        if self.nac_head is not None:
            _, vectors = self.nac_head((scalar, inputs["vector_representation"]))
            smooth = vectors.permute(0, 2, 1) * self.coupling_scale.to(dtype)  # (A, P, 3)
            out["smooth_nacs"] = smooth
            out["nacs"] = self.nacs_from_smooth(smooth, out["energies"], idx_m)
        if self.dipole_head is not None:
            charges, vectors = self.dipole_head((scalar, inputs["vector_representation"]))
            centre = spk.nn.scatter_add(positions, idx_m, dim_size=n_molecules) / batch[structure.n_atoms][:, None].to(dtype)
            relative = positions - centre[idx_m]
            atomwise = charges[:, None, :] * relative[:, :, None] + vectors  # (A, 3, Pd) or (A, 3, Pd + P n) indexed
            if self.config.diabatic_dipoles and self.config.indexed_couplings:
                atomwise = self.indexed_off_diagonal(atomwise, n_molecules)
            dipoles = spk.nn.scatter_add(atomwise, idx_m, dim_size=n_molecules).permute(0, 2, 1)  # (B, Pd, 3)
            if self.config.diabatic_dipoles:
                out["diabatic_dipoles"] = dipoles
                dipoles = self.adiabatic_dipoles(dipoles, out["state_vectors"])
            out["dipoles"] = dipoles
        return out

    def adiabatic_dipoles(self, diabatic: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Upper-triangle quasi-diabatic dipoles (B, Pd, 3) -> adiabatic ones mu_ij = U_i^T mu^d U_j (B, Pd, 3), with the
        Hamiltonian's eigenvectors U (B, N, N) (columns)."""
        N = self.n_states
        full = diabatic[:, self.hamiltonian_columns].reshape(len(diabatic), N, N, 3)
        rotated = torch.einsum("bki,bklc,blj->bijc", vectors, full, vectors)
        return rotated[:, self.dipole_pairs[:, 0], self.dipole_pairs[:, 1]]

    def diabatic_energies(self, scalar: torch.Tensor, idx_m: torch.Tensor, n_molecules: int) -> dict[str, torch.Tensor]:
        """Quasi-diabatic H (B, N, N) from the scalar features (A, F), its eigenvalues (B, N) ascending and
        eigenvectors U (B, N, N) (columns; eigh in float64, returned in the network's precision)."""
        dtype = scalar.dtype
        N = self.n_states
        shift = torch.zeros(self.hamiltonian_diagonal.shape, dtype=dtype, device=scalar.device)
        shift[self.hamiltonian_diagonal] = self.energy_mean.to(dtype)
        outputs = self.hamiltonian_head(scalar) * self.energy_std.to(dtype)  # (A, Pd) or (A, Pd + P n) indexed
        atomic = torch.cat([outputs[:, : len(shift)] + shift, outputs[:, len(shift):]], dim=1)
        if self.config.indexed_couplings:
            atomic = self.indexed_off_diagonal(atomic, n_molecules)
        elements = spk.nn.scatter_add(atomic, idx_m, dim_size=n_molecules)  # (B, Pd)
        hamiltonian = elements[:, self.hamiltonian_columns].reshape(n_molecules, N, N)
        # a structure with non-finite elements (NaN positions) gets NaN energies and vectors, as the adiabatic head
        # would give it, instead of stopping the whole batch in LAPACK
        finite = torch.isfinite(hamiltonian).all(-1).all(-1)[:, None, None]
        identity = torch.eye(N, dtype=torch.float64, device=hamiltonian.device)
        energies, vectors = torch.linalg.eigh(torch.where(finite, hamiltonian.double(), identity))
        energies = torch.where(finite[:, :, 0], energies, torch.nan)
        vectors = torch.where(finite, vectors, torch.nan)
        return {"energies": energies.to(dtype), "hamiltonian": hamiltonian, "hamiltonian_elements": elements,
                "state_vectors": vectors.to(dtype)}

    def indexed_off_diagonal(self, atomic: torch.Tensor, n_molecules: int) -> torch.Tensor:
        """Per-atom upper-triangle shares (A, ..., Pd + P n) -> (A, ..., Pd): atom k of a structure takes its own slot
        k of the off-diagonal outputs (made even or odd under a declared exchange); the diagonal stays one function of
        every atom's features."""
        n, Pd = len(self.config.molecule), len(self.hamiltonian_diagonal)
        if atomic.shape[0] != n * n_molecules:
            raise ConfigurationError(f"the model was trained with indexed couplings on one molecule of {n} atoms; "
                                     f"this batch has {atomic.shape[0]} atoms in {n_molecules} structures",
                                     where="indexed_couplings")
        # atoms of a structure are contiguous and in order
        slots = atomic[..., Pd:].reshape(*atomic.shape[:-1], n, -1)  # (A, ..., n, P)
        position = torch.arange(len(atomic), device=atomic.device) % n
        rows = torch.arange(len(atomic), device=atomic.device)
        own = slots.movedim(-2, 1)[rows, position]  # (A, ..., P)
        if self.config.exchange:
            own = self.symmetrise_couplings(own, slots.movedim(-2, 1)[rows, self.exchange_image[position]])
        result = atomic[..., :Pd].clone()
        result[..., ~self.hamiltonian_diagonal] = own
        return result

    def symmetrise_couplings(self, own: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Per-atom coupling shares (A, ..., P) made even or odd under the declared exchange of atoms.

        Exchanging the atoms moves each atom into its partner's position without changing any atom's invariant
        features, so the exchanged geometry's share of atom k is its output for the partner's slot (`image`, (A, P)).
        (own + parity * image) / 2 is then exactly even (parity +1) or odd (-1) under the exchange: an odd coupling
        vanishes wherever the exchange leaves the geometry unchanged up to a rotation (the vibronic-coupling selection
        rule: an inter-state coupling is linear only in modes of the symmetry of the two states' product; Koeppel,
        Domcke, Cederbaum, Adv. Chem. Phys. 57, 59 (1984))."""
        return 0.5 * (own + self.coupling_parity.to(own.dtype) * image)

    def exact_nacs(self, smooth: torch.Tensor, energies: torch.Tensor, idx_m: torch.Tensor) -> torch.Tensor:
        """d = h / dE per atom and pair from the eigenvalues of the diabatic head's H (ascending, so dE >= 0); an exact
        degeneracy gives the largest finite coupling instead of a division by zero."""
        gap = energies[:, self.pair_j] - energies[:, self.pair_i]  # (B, P)
        gap = torch.clamp(gap, min=torch.finfo(gap.dtype).tiny)
        return smooth / gap[idx_m][:, :, None]

    def nacs_from_smooth(self, smooth: torch.Tensor, energies: torch.Tensor, idx_m: torch.Tensor) -> torch.Tensor:
        """d = h / (sign(dE) sqrt(dE^2 + eps^2)) per atom and pair (see module docstring)."""
        gap = energies[:, self.pair_j] - energies[:, self.pair_i]  # (B, P)
        sign = torch.where(gap < 0, -1.0, 1.0).to(gap.dtype)
        denominator = sign * torch.sqrt(gap**2 + self.config.nac_epsilon**2)
        return smooth / denominator[idx_m][:, :, None]


def add_diabatic_derivatives(out: dict[str, torch.Tensor], positions: torch.Tensor, idx_m: torch.Tensor,
                             forces: str | None, states: torch.Tensor | None, create_graph: bool,
                             network: MultiStateNetwork) -> None:
    """Forces (as `MultiStateNetwork.forward` asks) and smooth_nacs / nacs (A, P, 3) of a diabatic-head prediction,
    from dH/dR by one backward pass per upper-triangle element (kept as hamiltonian_derivative (A, N, N, 3),
    Hartree/Bohr, for committees that average Hamiltonians)."""
    N = network.n_states
    if forces is None and N < 2:
        return
    elements = out["hamiltonian_elements"]
    n_elements = elements.shape[1]
    gradients = [  # (torch.autograd.grad's is_grads_batched was measured no faster here)
        torch.autograd.grad(elements[:, k].sum(), positions, create_graph=create_graph,
                            retain_graph=create_graph or k < n_elements - 1)[0]
        for k in range(n_elements)
    ]
    derivative = torch.stack(gradients, 1)[:, network.hamiltonian_columns].reshape(-1, N, N, 3)  # (A, N, N, 3)
    out["hamiltonian_derivative"] = derivative
    project_diabatic_derivatives(out, derivative, out["state_vectors"], idx_m, forces, states, network)


def project_diabatic_derivatives(out: dict[str, torch.Tensor], derivative: torch.Tensor, vectors: torch.Tensor,
                                 idx_m: torch.Tensor, forces: str | None, states: torch.Tensor | None,
                                 network: MultiStateNetwork) -> None:
    """Hellmann-Feynman: G = U^T dH U per atom from dH/dR (A, N, N, 3) and the eigenvectors U (B, N, N) of H; writes
    forces F_k = -G_kk (as `MultiStateNetwork.forward` asks) and smooth_nacs h_ij = G_ij / nacs (A, P, 3) into `out`,
    whose "energies" (B, N) are the eigenvalues belonging to U."""
    N = network.n_states
    per_atom = vectors[idx_m]  # (A, N, N)
    coupling = torch.einsum("aki,aklx,alj->aijx", per_atom, derivative, per_atom)  # (A, N, N, 3)
    if forces == "all":
        out["forces"] = -torch.diagonal(coupling, dim1=1, dim2=2).permute(0, 2, 1)  # (A, N, 3)
    elif forces == "selected":
        if states is None:
            raise ValueError("forces='selected' needs the selected state of every molecule")
        selected = states.to(coupling.device).long()[idx_m]
        atoms = torch.arange(len(selected), device=coupling.device)
        out["forces"] = -coupling[atoms, selected, selected]
    if N > 1:
        smooth = coupling[:, network.pair_i, network.pair_j]  # (A, P, 3)
        out["smooth_nacs"] = smooth
        out["nacs"] = network.exact_nacs(smooth, out["energies"], idx_m)


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
