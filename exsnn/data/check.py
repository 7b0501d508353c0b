"""The data check: find suspicious frames instead of silently training on them.

Checks (each problem names its frame and says why):

* ``short_distance``: two atoms closer than `distance_factor` times the sum of their covalent radii
  (default 0.5; catches geometries converted twice between Angstrom and Bohr);
* ``non_finite``: NaN or infinite positions or present labels;
* ``nac_translation``: a NAC vector whose sum over atoms is more than `nac_translation_ratio` of its norm
  (|sum_a d_a| / ||d||; coupling computed without electron-translation factors);
* ``energy_order``: adiabatic energies not in ascending order (by more than `energy_order_tolerance` Hartree);
* ``implausible_label``: a force, or a coupling numerator h_ij = (E_j - E_i) d_ij, above `max_force` (default 3
  Hartree/Bohr, about 150 eV/Angstrom, far beyond any geometry dynamics or Wigner sampling reaches): what an
  ill-conditioned SA-CASSCF orbital response gives (seen once in 80 SA-4-CASSCF(6,4) labels of CH2NH2+: forces of
  7-9 Hartree/Bohr and NACs of 472 1/Bohr at gaps of 1-2 eV).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from ase.data import covalent_radii

from exsnn.data.frame import FrameArrays
from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, NACS, state_pairs
from exsnn.units import ANGSTROM_IN_BOHR

#: the problem kinds the check reports (`exsnn data filter --drop` takes these)
PROBLEM_KINDS = ("short_distance", "non_finite", "nac_translation", "energy_order", "implausible_label")

#: Hartree/Bohr: larger forces or coupling numerators are taken for failed calculations (see the module docstring)
MAX_FORCE = 3.0


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
    max_force: float = MAX_FORCE


def implausible_labels(forces: np.ndarray | None, energies: np.ndarray | None, nacs: np.ndarray | None,
                       limit: float = MAX_FORCE) -> str | None:
    """Why one structure's labels cannot be right, or None: forces (n, N, 3) and coupling numerators
    (E_j - E_i) d_ij from energies (N,) and NACs (n, P, 3), Hartree/Bohr, checked against `limit`."""
    reasons = []
    if forces is not None and np.all(np.isfinite(forces)):
        size = np.linalg.norm(forces, axis=-1)  # (n, N)
        if size.max() > limit:
            atom, state = np.unravel_index(np.argmax(size), size.shape)
            reasons.append(f"|force| {size.max():.2f} Hartree/Bohr on atom {atom} in S{state}")
    if nacs is not None and energies is not None and np.all(np.isfinite(nacs)) and np.all(np.isfinite(energies)):
        pairs = state_pairs(len(energies))
        gaps = np.array([energies[j] - energies[i] for i, j in pairs])
        size = np.linalg.norm(nacs, axis=-1) * np.abs(gaps)[None, :]  # (n, P)
        if size.max() > limit:
            atom, p = np.unravel_index(np.argmax(size), size.shape)
            i, j = pairs[p]
            reasons.append(f"|(E_j - E_i) d_ij| {size.max():.2f} Hartree/Bohr on atom {atom} for pair {i}{j}")
    if not reasons:
        return None
    return "; ".join(reasons) + f" (above {limit:g} Hartree/Bohr: a failed calculation)"


def _implausible(arrays: FrameArrays, limit: float) -> list[Problem]:
    problems = []
    for k in range(arrays.n_frames):
        a, b = arrays.atom_offsets[k], arrays.atom_offsets[k + 1]
        forces = arrays.forces[a:b] if arrays.masks[FORCES][k] else None
        has_nacs = arrays.masks[NACS][k] and arrays.masks[ENERGIES][k]
        reason = implausible_labels(forces, arrays.energies[k] if has_nacs else None, arrays.nacs[a:b] if has_nacs else None,
                                    limit)
        if reason:
            problems.append(Problem(k, "implausible_label", reason))
    return problems


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
        *_implausible(arrays, settings.max_force),
    ]
    return sorted(problems, key=lambda p: (p.frame, p.kind))
