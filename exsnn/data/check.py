"""The data check: find suspicious frames instead of silently training on them.

Checks (each problem names its frame and says why):

* ``short_distance``: two atoms closer than `distance_factor` times the sum of their covalent radii
  (default 0.5; catches geometries converted twice between Angstrom and Bohr);
* ``non_finite``: NaN or infinite positions or present labels;
* ``nac_translation``: a NAC vector whose sum over atoms is more than `nac_translation_ratio` of its norm
  (|sum_a d_a| / ||d||; coupling computed without electron-translation factors);
* ``energy_order``: adiabatic energies not in ascending order (by more than `energy_order_tolerance` Hartree).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from ase.data import covalent_radii

from exsnn.data.frame import FrameArrays
from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, NACS, state_pairs
from exsnn.units import ANGSTROM_IN_BOHR

#: the problem kinds the check reports (`exsnn data filter --drop` takes these)
PROBLEM_KINDS = ("short_distance", "non_finite", "nac_translation", "energy_order")


@dataclass(frozen=True)
class Problem:
    """One suspicious frame: `kind` is a short code, `reason` a sentence with the numbers."""

    frame: int
    kind: str  # one of PROBLEM_KINDS
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CheckSettings:
    distance_factor: float = 0.5
    nac_translation_ratio: float = 0.1
    energy_order_tolerance: float = 1e-6


def _short_distances(arrays: FrameArrays, factor: float) -> list[Problem]:
    problems = []
    radii = covalent_radii * ANGSTROM_IN_BOHR
    for k in range(arrays.n_frames):
        a, b = arrays.atom_offsets[k], arrays.atom_offsets[k + 1]
        positions, numbers = arrays.positions[a:b], arrays.numbers[a:b]
        if b - a < 2 or not np.all(np.isfinite(positions)):
            continue
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        limit = factor * (radii[numbers][:, None] + radii[numbers][None])
        ratio = distances / limit
        np.fill_diagonal(ratio, np.inf)
        i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
        if ratio[i, j] < 1.0:
            problems.append(
                Problem(
                    k,
                    "short_distance",
                    f"atoms {min(i, j)} and {max(i, j)} are {distances[i, j]:.3f} Bohr apart "
                    f"(below {limit[i, j]:.3f} Bohr = {factor} x covalent radii)",
                )
            )
    return problems


def _non_finite(arrays: FrameArrays) -> list[Problem]:
    problems = []
    atom_frame = np.repeat(np.arange(arrays.n_frames), arrays.n_atoms)

    def per_frame_bad(values: np.ndarray, per_atom: bool) -> np.ndarray:
        bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if per_atom:
            return np.bincount(atom_frame[bad], minlength=arrays.n_frames) > 0
        return bad

    checks = {
        "positions": (per_frame_bad(arrays.positions, True), np.ones(arrays.n_frames, bool)),
        ENERGIES: (per_frame_bad(arrays.energies, False), arrays.masks[ENERGIES]),
        FORCES: (per_frame_bad(arrays.forces, True), arrays.masks[FORCES]),
        NACS: (per_frame_bad(arrays.nacs, True), arrays.masks[NACS]),
        DIPOLES: (per_frame_bad(arrays.dipoles, False), arrays.masks[DIPOLES]),
    }
    for name, (bad, present) in checks.items():
        for k in np.flatnonzero(bad & present):
            problems.append(Problem(int(k), "non_finite", f"{name} contain NaN or infinite values"))
    return problems


def _nac_translation(arrays: FrameArrays, ratio_limit: float) -> list[Problem]:
    problems = []
    pairs = state_pairs(arrays.n_states)
    for k in np.flatnonzero(arrays.masks[NACS]):
        nacs = arrays.nacs[arrays.atom_offsets[k] : arrays.atom_offsets[k + 1]]  # (n, P, 3)
        total = np.linalg.norm(nacs.sum(axis=0), axis=-1)  # (P,)
        norm = np.sqrt((nacs**2).sum(axis=(0, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(norm > 0, total / norm, 0.0)
        flagged = [f"{pairs[p][0]}{pairs[p][1]}: {ratio[p]:.0%}" for p in np.flatnonzero(ratio > ratio_limit)]
        if flagged:
            problems.append(
                Problem(
                    int(k),
                    "nac_translation",
                    "NAC sum over atoms is a large fraction of the norm (no electron-translation factors?): "
                    + ", ".join(flagged),
                )
            )
    return problems


def _energy_order(arrays: FrameArrays, tolerance: float) -> list[Problem]:
    problems = []
    steps = np.diff(arrays.energies, axis=1)
    for k in np.flatnonzero(arrays.masks[ENERGIES] & np.any(steps < -tolerance, axis=1)):
        s = int(np.argmax(steps[k] < -tolerance))
        problems.append(
            Problem(int(k), "energy_order", f"state {s + 1} lies {-steps[k, s]:.2e} Hartree below state {s}")
        )
    return problems


def check_frames(arrays: FrameArrays, settings: CheckSettings = CheckSettings()) -> list[Problem]:
    """All problems found, sorted by frame."""
    problems = [
        *_short_distances(arrays, settings.distance_factor),
        *_non_finite(arrays),
        *_nac_translation(arrays, settings.nac_translation_ratio),
        *_energy_order(arrays, settings.energy_order_tolerance),
    ]
    return sorted(problems, key=lambda p: (p.frame, p.kind))
