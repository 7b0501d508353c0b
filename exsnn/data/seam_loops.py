"""Seam loops in a dataset: labelled frames on a closed loop around a two-state conical intersection.

A frame on a loop carries `{"seam_loop": {"loop": L, "point": k, "pair": [i, j]}}` in its provenance (k = 0..K-1
in order around loop L). From the labelled couplings of the pair along the loop, aligned in sign by continuity, the
mixing angle of the two states follows by integration, theta_k = sum of d_ij . dx from point 0 (Longuet-Higgins,
Proc. R. Soc. A 344, 147 (1975); Mead and Truhlar, J. Chem. Phys. 70, 2284 (1979)): it turns by pi around a loop that
encloses an intersection and returns to 0 around one that does not. In the two-state picture the squared overlap of a
state at point k with the same state at point l is cos^2(theta_k - theta_l), a sign-free target that a model with
state vectors (the quasi-diabatic head) can be trained on (`exsnn.model.seam_loss`), so that its states cross at the
seam where the reference's do, which energies, forces and sign-free couplings cannot teach (issue #14).

Units: positions Bohr, couplings 1/Bohr, angles radians.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exsnn.data.properties import state_pairs
from exsnn.data.store import read_frames
from exsnn.errors import DataError, ExsnnWarning

#: provenance key of a frame on a seam loop
SEAM_LOOP = "seam_loop"
#: a loop needs at least this many points for its angles to mean anything
MIN_LOOP_POINTS = 8


@dataclass(frozen=True)
class SeamLoop:
    """One labelled loop: frames (K,) dataset rows in loop order, the state pair (i, j), the mixing angles (K,)
    radians from point 0, the whole integral around the loop (radians; +-pi: an intersection inside) and the
    squared-overlap target (K, K) = cos^2(theta_k - theta_l)."""

    loop: int
    frames: np.ndarray
    pair: tuple[int, int]
    angles: np.ndarray
    integral: float

    @property
    def target(self) -> np.ndarray:
        return np.cos(self.angles[:, None] - self.angles[None, :]) ** 2


def aligned_couplings(couplings: np.ndarray) -> np.ndarray:
    """(K, n, 3) couplings along a path with each sign chosen to overlap positively with the one before."""
    out = np.array(couplings, dtype=float)
    for k in range(1, len(out)):
        if np.sum(out[k] * out[k - 1]) < 0:
            out[k] = -out[k]
    return out


def loop_angles(positions: np.ndarray, couplings: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Mixing angles (K + 1,) radians at the K points of a closed loop and back at the first (trapezoid rule, the
    last point joined to the first; theta_0 = 0, theta_K is the whole integral), and the closure: the cosine between
    the last aligned coupling and the first. Couplings (K, n, 3) of any per-point sign, positions (K, n, 3) Bohr."""
    d = aligned_couplings(couplings)
    closure = float(np.sum(d[-1] * d[0]) / (np.linalg.norm(d[-1]) * np.linalg.norm(d[0])))
    step = np.roll(positions, -1, axis=0) - positions
    ahead = np.roll(d, -1, axis=0)
    ahead[-1] *= np.sign(closure) or 1.0  # the first coupling as the last one continues it
    increments = np.sum(0.5 * (d + ahead) * step, axis=(1, 2))
    return np.concatenate([[0.0], np.cumsum(increments)]), closure, float(np.sum(increments))


def seam_loop_tag(record: dict) -> dict | None:
    """The seam-loop tag of a frame's provenance record, None when the frame is on no loop."""
    tag = record.get(SEAM_LOOP)
    return tag if isinstance(tag, dict) else None


def read_seam_loops(path: str | Path) -> list[SeamLoop]:
    """The labelled seam loops of a dataset (empty when it has none). A loop with a point whose labelling failed (a
    recorded failure, e.g. an SCF that did not converge) is left out with a warning; DataError for a loop with missing
    points, too few points or unlabelled couplings."""
    arrays = read_frames(path)
    members: dict[int, dict[int, int]] = {}
    pairs: dict[int, tuple[int, int]] = {}
    failed: set[int] = set()
    for row, text in enumerate(arrays.provenance):
        record = json.loads(text) if text else {}
        tag = seam_loop_tag(record)
        if tag is None:
            continue
        loop, point, pair = int(tag["loop"]), int(tag["point"]), tuple(int(s) for s in tag["pair"])
        members.setdefault(loop, {})[point] = row
        pairs[loop] = pair  # type: ignore[assignment]
        if record.get("failure"):
            failed.add(loop)
    for loop in sorted(failed):
        warnings.warn(f"{path}: seam loop {loop}: the oracle failed at one of its points; the loop is left out",
                      ExsnnWarning, stacklevel=2)
    loops = []
    for loop in sorted(set(members) - failed):
        points = members[loop]
        rows = np.array([points[k] for k in sorted(points)], dtype=np.int64)
        where = f"seam loop {loop}"
        if sorted(points) != list(range(len(points))) or len(points) < MIN_LOOP_POINTS:
            raise DataError(path, where, f"needs points 0..K-1 with K >= {MIN_LOOP_POINTS}, has {sorted(points)}")
        i, j = pairs[loop]
        if not 0 <= i < j < arrays.n_states:
            raise DataError(path, where, f"state pair {(i, j)} does not exist with {arrays.n_states} states")
        if not arrays.masks["nacs"][rows].all():
            raise DataError(path, where, f"frames {rows[~arrays.masks['nacs'][rows]].tolist()} have no coupling labels")
        column = state_pairs(arrays.n_states).index((i, j))
        frames = [arrays.frame(int(r)) for r in rows]
        positions = np.stack([f.positions for f in frames])
        couplings = np.stack([f.nacs[:, column] for f in frames])  # type: ignore[index]
        angles, _, integral = loop_angles(positions, couplings)
        loops.append(SeamLoop(loop=loop, frames=rows, pair=(i, j), angles=angles[:-1], integral=integral))
    return loops
