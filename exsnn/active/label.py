"""Labelling with the oracle: idempotent, batched, crash-safe appends to the campaign dataset.

Every frame carries `{"campaign": {"iteration": i, "index": k, "split": "train"|"test", ...why it was chosen}}` in
its provenance. Before labelling, the (iteration, index) pairs already in the file are skipped, and each batch is one
atomic append, so a campaign killed at any instant neither loses a committed label nor labels anything twice. A
structure the oracle fails on (non-finite energies, forces or NACs, e.g. a PySCF failure) is written without labels
and with the reason, and never retried.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exsnn.data import DatasetMetadata, Frame, append_frames
from exsnn.data.seam_loops import SEAM_LOOP
from exsnn.data.store import open_h5
from exsnn.potentials.base import Potential


def labelled_tags(path: Path) -> set[tuple[int, int]]:
    """(iteration, index) of every frame already in the dataset."""
    if not path.exists():
        return set()
    with open_h5(path) as h5:
        records = [json.loads(r) for r in h5["frames/provenance"].asstr()[:]] if "frames/provenance" in h5 else []
    return {(int(r["campaign"]["iteration"]), int(r["campaign"]["index"])) for r in records if "campaign" in r}


def oracle_frames(oracle: Potential, positions: torch.Tensor, tags: list[dict[str, Any]]) -> list[Frame]:
    """The oracle's labels of structures (K, n, 3) Bohr as campaign frames, provenance tagged; failures unlabelled."""
    numbers = oracle.numbers.cpu().numpy()
    out = oracle.compute(positions.to(oracle.device, torch.float64), all_forces=True, nacs=oracle.n_states > 1)
    frames = []
    for k, tag in enumerate(tags):
        energies = out.energies[k].cpu().numpy()
        forces = out.all_forces[k].permute(1, 0, 2).cpu().numpy()  # type: ignore[union-attr]
        nacs = None if out.nacs is None else out.nacs[k].permute(1, 0, 2).cpu().numpy()
        provenance = {"source": "campaign", "oracle": oracle.describe(),
                      "campaign": {key: value for key, value in tag.items() if key != SEAM_LOOP},
                      **({SEAM_LOOP: tag[SEAM_LOOP]} if SEAM_LOOP in tag else {})}  # a loop point: exsnn.data.seam_loops
        finite = np.all(np.isfinite(energies)) and np.all(np.isfinite(forces)) and (nacs is None or np.all(np.isfinite(nacs)))
        if not finite:
            frames.append(Frame(numbers=numbers, positions=positions[k].cpu().numpy(), multiplicity=1,
                                provenance={**provenance, "failure": getattr(oracle, "last_failures", {}).get(
                                    k, "the oracle failed at this structure (non-finite labels)")}))
            continue
        dipoles = None if out.dipoles is None else out.dipoles[k].cpu().numpy()
        frames.append(Frame(numbers=numbers, positions=positions[k].cpu().numpy(), energies=energies, forces=forces,
                            nacs=nacs, dipoles=dipoles, multiplicity=1, provenance=provenance))
    return frames


def failed_frames(path: Path) -> list[int]:
    """Indices of the frames of a campaign dataset without energies (the oracle failed there)."""
    if not path.exists():
        return []
    with open_h5(path) as h5:
        return np.flatnonzero(~h5["masks/energies"][()]).tolist()


def unlabelled(path: Path, tags: list[dict[str, Any]]) -> list[int]:
    """Positions in `tags` (each with "iteration" and "index") of the structures not in `path` yet."""
    done = labelled_tags(path)
    return [k for k, tag in enumerate(tags) if (int(tag["iteration"]), int(tag["index"])) not in done]


def label_structures(path: Path, oracle: Potential, positions: torch.Tensor, tags: list[dict[str, Any]],
                     metadata: DatasetMetadata, batch: int) -> int:
    """Label the structures (K, n, 3) whose tags (each with "iteration" and "index") are not in `path` yet, `batch`
    per atomic append; return how many were labelled now."""
    todo = unlabelled(path, tags)
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        append_frames(path, oracle_frames(oracle, positions[chunk], [tags[k] for k in chunk]), metadata)
    return len(todo)


def oracle_metadata(oracle: Potential, spec: str) -> DatasetMetadata:
    return DatasetMetadata(n_states=oracle.n_states, method=spec, program="exsnn campaign oracle",
                           extra={"oracle": oracle.describe()})
