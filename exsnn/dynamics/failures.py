"""Failed electronic structure in potential outputs: detect it, and hold the trajectory at its last good step.

A potential reports a structure it could not compute (an SCF that did not converge, a missing root) as non-finite
energies, forces or NACs in that row (see `exsnn.potentials.base`). The engine ends such a trajectory with status
ELECTRONIC_FAILURE where it was, whichever call failed: the step's main call, the forces after a hop or a forced hop,
or the target forces of the grad-V check.
"""

from __future__ import annotations

import torch

from exsnn.potentials.base import PotentialOutput


def failed_rows(out: PotentialOutput) -> torch.Tensor | None:
    """(B,) True where the potential gave non-finite energies, forces or NACs (a failed calculation), or None when
    every row is finite (the usual case, found with one host synchronisation)."""
    tensors = [t for t in (out.energies, out.forces, out.nacs) if t is not None]
    # a sum is finite exactly when every term is (barring overflow, which the row check below then sorts out)
    if bool(torch.isfinite(torch.stack([t.sum() for t in tensors])).all()):
        return None
    bad = ~torch.isfinite(tensors[0]).all(dim=1)
    for tensor in tensors[1:]:
        bad = bad | ~torch.isfinite(tensor).flatten(1).all(dim=1)
    return bad if bool(bad.any()) else None


def non_finite_rows(out: PotentialOutput) -> torch.Tensor:
    """(B,) True where the potential gave non-finite energies, forces or NACs (a failed calculation)."""
    bad = failed_rows(out)
    return torch.zeros(len(out.energies), dtype=torch.bool, device=out.energies.device) if bad is None else bad


def keep_rows(keep: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """`new` (B, ...) with the rows where `keep` (B,) is True taken from `old`."""
    return torch.where(keep.view(-1, *([1] * (new.dim() - 1))), old, new)


def keep_previous(out: PotentialOutput, broken: torch.Tensor, energies: torch.Tensor, forces: torch.Tensor,
                  nacs: torch.Tensor, vectors: torch.Tensor | None) -> PotentialOutput:
    """`out` with the rows of failed structures (broken (B,)) replaced by the previous step's values."""
    def pick(new: torch.Tensor | None, old: torch.Tensor | None) -> torch.Tensor | None:
        return new if new is None or old is None else keep_rows(broken, old, new)

    return PotentialOutput(energies=pick(out.energies, energies), forces=pick(out.forces, forces),  # type: ignore[arg-type]
                           nacs=pick(out.nacs, nacs), state_vectors=pick(out.state_vectors, vectors))
