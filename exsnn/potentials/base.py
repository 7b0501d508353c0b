"""The one batched potential interface that drives dynamics, `exsnn point` and labelling.

A potential maps positions of B structures of the same molecule, (B, n, 3) in Bohr, to adiabatic energies of
N states and, on request, forces of one selected state per structure (the dynamics path), forces of all states,
and NAC vectors of every pair i<j. Tensors are torch float64 on the potential's device. Shapes:

===============  =============  ==========================================================
energies         (B, N)         Hartree, ascending per structure
forces           (B, n, 3)      Hartree/Bohr, of `states[b]` for structure b (selected path)
all_forces       (B, N, n, 3)   Hartree/Bohr, of every state (when asked)
nacs             (B, P, n, 3)   1/Bohr, d_ij = <i|d/dR j> for pairs 01, 02, ..., 12, ... (arbitrary signs)
dipoles          (B, Pd, 3)     e*Bohr, pairs 00, 01, ..., (optional)
state_vectors    (B, K, N)      the adiabatic states in a fixed basis (optional; e.g. diabatic eigenvectors):
                                overlaps between steps fix the states' signs (phase tracking)
===============  =============  ==========================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from exsnn.data.properties import n_pairs


@dataclass
class PotentialOutput:
    energies: torch.Tensor
    forces: torch.Tensor | None = None
    all_forces: torch.Tensor | None = None
    nacs: torch.Tensor | None = None
    dipoles: torch.Tensor | None = None
    state_vectors: torch.Tensor | None = None

    def subset(self, index: torch.Tensor) -> PotentialOutput:
        """The outputs of the structures at `index` (a (K,) long tensor)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return PotentialOutput(
            pick(self.energies), pick(self.forces), pick(self.all_forces), pick(self.nacs), pick(self.dipoles), pick(self.state_vectors)
        )


class Potential(ABC):
    """Batched adiabatic potential of a fixed molecule (atomic numbers and masses fixed)."""

    #: number of adiabatic states N
    n_states: int
    #: atomic numbers (n,)
    numbers: torch.Tensor
    #: nuclear masses (n,), electron masses
    masses: torch.Tensor
    device: torch.device = torch.device("cpu")

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_pairs(self) -> int:
        return n_pairs(self.n_states)

    @abstractmethod
    def compute(
        self,
        positions: torch.Tensor,
        states: torch.Tensor | None = None,
        all_forces: bool = False,
        nacs: bool = True,
        trajectories: torch.Tensor | None = None,
    ) -> PotentialOutput:
        """Energies of all states for positions (B, n, 3); forces of `states` (B,) if given; forces of all states
        if `all_forces`; NACs if `nacs`.

        `trajectories` (B,) long: which trajectory of an ensemble each structure belongs to (the engine calls with
        subsets: running trajectories only, hop refreshes, frustrated-hop checks). Potentials that keep state between
        calls (an SCF guess, a cached calculation at an unchanged geometry) key it by these ids; None means the
        structures are unrelated (each call stands alone)."""

    def describe(self) -> str:
        return type(self).__name__
