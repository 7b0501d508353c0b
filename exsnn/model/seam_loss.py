"""The seam-loop term: a quasi-diabatic model's states must turn around a loop the way the reference's do.

Energies, forces and sign-free couplings cannot tell quasi-diabatic states that cross at a seam from ones that only
touch there (issue #14); the two differ in how the adiabatic states turn around a loop about the seam: by pi with an
intersection inside, back to where they started without one. For each labelled loop (`exsnn.data.seam_loops`) the
reference's mixing angles theta_k give the squared overlaps cos^2(theta_k - theta_l) of a state with itself between
points k and l; the model's are (U_s(k) . U_s(l))^2 from its Hamiltonian's eigenvectors U. The term is the mean squared
difference over all point pairs, for both states of the pair. It is sign-free (U's columns have arbitrary signs) and,
unlike the winding number itself, has a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from exsnn.data.seam_loops import SeamLoop
from exsnn.data.torch_data import ExcitedStateTorchDataset


@dataclass
class LoopBatch:
    """One loop ready for the network: its batch of K structures, the state pair and the target (K, K)."""

    batch: dict[str, torch.Tensor]
    pair: tuple[int, int]
    target: torch.Tensor

    def to(self, device: torch.device, dtype: torch.dtype) -> LoopBatch:
        batch = {k: v.to(device) if not torch.is_floating_point(v) else v.to(device, dtype) for k, v in self.batch.items()}
        return LoopBatch(batch, self.pair, self.target.to(device, dtype))


def loop_batches(dataset: ExcitedStateTorchDataset, loops: list[SeamLoop]) -> list[LoopBatch]:
    """The loops' frames of `dataset` (any split: a loop is one target) as network batches."""
    out = []
    for loop in loops:
        whole = ExcitedStateTorchDataset(dataset.arrays, cutoff=dataset.cutoff, indices=loop.frames, dtype=dataset.dtype)  # type: ignore[arg-type]
        out.append(LoopBatch(whole.__getitems__(range(len(loop.frames))), loop.pair,
                             torch.as_tensor(loop.target, dtype=dataset.dtype)))
    return out


def seam_loop_loss(state_vectors: torch.Tensor, pair: tuple[int, int], target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the model's squared self-overlaps (U_s(k) . U_s(l))^2 of states s in `pair`
    across the K loop points (state_vectors (K, N, N), columns the states) and the reference's `target` (K, K)."""
    total = state_vectors.new_zeros(())
    for state in pair:
        u = state_vectors[:, :, state]
        total = total + ((u @ u.T) ** 2 - target).pow(2).mean()
    return total / len(pair)
