"""Label geometries with any potential: exsnn frames with energies, forces of all states and NACs."""

from __future__ import annotations

from typing import Any

import torch

from exsnn.data.frame import Frame
from exsnn.potentials.base import Potential


def label_frames(
    potential: Potential, positions: torch.Tensor, provenance: dict[str, Any] | None = None, batch_size: int = 256
) -> list[Frame]:
    """Frames for positions (B, n, 3) Bohr: energies (N,), forces (n, N, 3), NACs (n, P, 3), dipoles if available."""
    frames: list[Frame] = []
    numbers = potential.numbers.cpu().numpy()
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size].to(potential.device, torch.float64)
        out = potential.compute(chunk, all_forces=True, nacs=True)
        for k in range(len(chunk)):
            frames.append(
                Frame(
                    numbers=numbers,
                    positions=chunk[k].cpu().numpy(),
                    energies=out.energies[k].cpu().numpy(),
                    forces=out.all_forces[k].permute(1, 0, 2).cpu().numpy(),  # type: ignore[union-attr]
                    nacs=None if out.nacs is None else out.nacs[k].permute(1, 0, 2).cpu().numpy(),
                    dipoles=None if out.dipoles is None else out.dipoles[k].cpu().numpy(),
                    multiplicity=1,
                    provenance={
                        "source": "potential",
                        "potential": potential.describe(),
                        "index": start + k,
                        **(provenance or {}),
                    },
                )
            )
    return frames


__all__ = ["label_frames"]
