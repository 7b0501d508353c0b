"""Wigner sampling of harmonic modes at 0 K and at a temperature T, with translations and rotations removed.

The Wigner function of a harmonic mode of frequency w in thermal equilibrium is a Gaussian in the mass-weighted
normal coordinate q and its momentum p (Hillery, O'Connell, Scully and Wigner, Phys. Rep. 106, 121 (1984), eq. 2.29):

    <q^2> = hbar / (2 w) coth(hbar w / 2 k T),    <p^2> = hbar w / 2 coth(hbar w / 2 k T)

(coth -> 1 at T = 0), so the mean energy of a mode is hbar w / 2 coth(hbar w / 2 k T). Cartesian displacements and
velocities are dx = M^-1/2 K q and v = M^-1/2 K p. Displacements along normal modes keep the centre of mass and give
no linear momentum; the angular momentum of the sampled structure, L = sum m (x - x_cm) x v, is second order in the
displacements but not zero: it is removed by subtracting the rigid rotation w x (x - x_cm), w = I^-1 L (I the inertia
tensor of the displaced structure), and the velocities are then scaled so that the kinetic energy equals the sampled
vibrational kinetic energy sum p^2 / 2 (the removed rotational energy is second order, so the scaling is close to 1).
For a linear molecule (3n - 5 modes) only the angular momentum perpendicular to its axis is removed: the component
along the axis is the vibrational angular momentum of the degenerate bends (q_x p_y - q_y p_x), part of their
Wigner function; removing it, as a rigid rotation about an axis with almost no moment of inertia, would take out
half of the bends' kinetic energy.

Modes below a low-frequency cutoff (default 10 cm^-1) are not sampled (q = p = 0) and reported: their harmonic
Wigner function is far too wide to describe a real torsion or libration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.photo.modes import HARTREE_IN_CM1, HarmonicModes

#: Boltzmann constant in Hartree per Kelvin (CODATA 2018)
BOLTZMANN_HARTREE_PER_K = 3.166811563e-6


def thermal_factor(frequencies: np.ndarray, temperature: float) -> np.ndarray:
    """coth(w / 2kT) per mode (1 at T = 0); frequencies (M,) Hartree, temperature in K."""
    frequencies = np.asarray(frequencies, dtype=float)
    if temperature <= 0:
        return np.ones_like(frequencies)
    x = frequencies / (2 * BOLTZMANN_HARTREE_PER_K * temperature)
    return 1.0 / np.tanh(x)


def mode_variances(frequencies: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """<q^2> and <p^2> per mode (M,) of the thermal Wigner function (atomic units, mass-weighted)."""
    factor = thermal_factor(frequencies, temperature)
    return factor / (2 * frequencies), frequencies * factor / 2


def mean_mode_energy(frequencies: np.ndarray, temperature: float) -> np.ndarray:
    """hbar w / 2 coth(hbar w / 2kT) per mode (M,), Hartree."""
    return 0.5 * np.asarray(frequencies) * thermal_factor(frequencies, temperature)


@dataclass
class WignerSample:
    """S sampled structures: positions and velocities (S, n, 3) in Bohr and Bohr per atomic time unit; the sampled
    normal coordinates q and momenta p (S, M) before the rotation was removed (zero for modes below the cutoff),
    which modes were sampled, and what was left out."""

    numbers: np.ndarray
    masses: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    q: np.ndarray
    p: np.ndarray
    sampled: np.ndarray  # (M,) bool
    temperature: float
    seed: int
    notes: list[str] = field(default_factory=list)

    def write_xyz(self, path: str | Path, method: str = "") -> Path:
        """Extended XYZ (Angstrom, ASE velocities) that `exsnn dynamics` (sampling = "file") and `exsnn excite` read."""
        from exsnn.photo.io import write_structures

        info = {"sampling": "wigner", "temperature_K": self.temperature, "seed": self.seed}
        if method:
            info["method"] = method
        return write_structures(path, self.numbers, self.positions, self.velocities, info)


def remove_rotation(positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray,
                    axis: np.ndarray | None = None) -> np.ndarray:
    """Velocities (S, n, 3) without total linear momentum and without angular momentum about the centre of mass of
    each structure. axis: for a linear molecule, its axis at the reference; the angular momentum along it is the
    vibrational angular momentum of the degenerate bends (sampled by their Wigner function, not a rotation of the
    molecule) and is kept; only the components perpendicular to it are removed."""
    total = masses.sum()
    momentum = np.einsum("i,sij->sj", masses, velocities)
    velocities = velocities - momentum[:, None, :] / total
    centred = positions - np.einsum("i,sij->sj", masses, positions)[:, None, :] / total
    angular = np.einsum("i,sij->sj", masses, np.cross(centred, velocities))
    r2 = np.einsum("sij,sij->si", centred, centred)
    inertia = np.einsum("i,si->s", masses, r2)[:, None, None] * np.eye(3) - np.einsum("i,sij,sik->sjk", masses, centred, centred)
    if axis is None:
        basis = np.broadcast_to(np.eye(3), (len(positions), 3, 3))
    else:  # two directions perpendicular to the molecular axis
        basis = np.broadcast_to(np.linalg.svd(np.eye(3) - np.outer(axis, axis))[0][:, :2], (len(positions), 3, 2))
    reduced = np.einsum("sji,sjk,skl->sil", basis, inertia, basis)
    omega = np.einsum("sji,si->sj", basis, np.linalg.solve(reduced, np.einsum("sji,sj->si", basis, angular)[..., None])[..., 0])
    return velocities - np.cross(omega[:, None, :], centred)


def molecular_axis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Unit vector along the principal axis of smallest inertia (the axis of a linear molecule)."""
    centred = positions - masses @ positions / masses.sum()
    inertia = np.einsum("i,ij,ik->jk", masses, centred, centred)
    return np.linalg.eigh(np.trace(inertia) * np.eye(3) - inertia)[1][:, 0]


def sample_wigner(modes: HarmonicModes, n_samples: int, seed: int, temperature: float = 0.0,
                  low_frequency_cutoff_cm1: float = 10.0, remove_rotations: bool = True) -> WignerSample:
    """Sample the thermal Wigner distribution of `modes` (temperature in K; 0 = ground state). The random numbers
    come from numpy's default generator seeded with `seed` only, so the same seed gives the same structures."""
    if n_samples < 1:
        raise ConfigurationError(f"the number of samples must be at least 1, got {n_samples}", where="samples")
    if temperature < 0 or not np.isfinite(temperature):
        raise ConfigurationError(f"the temperature must be a finite number of Kelvin >= 0, got {temperature}", where="temperature")
    if low_frequency_cutoff_cm1 < 0:
        raise ConfigurationError(f"the low-frequency cutoff must not be negative, got {low_frequency_cutoff_cm1}", where="cutoff")
    if seed < 0:
        raise ConfigurationError(f"the seed must not be negative, got {seed}", where="seed")
    frequencies = np.asarray(modes.frequencies, dtype=float)
    if np.any(frequencies <= 0):
        raise ConfigurationError("Wigner sampling needs positive frequencies (imaginary modes must be left out)", where="modes")
    sampled = frequencies * HARTREE_IN_CM1 >= low_frequency_cutoff_cm1
    notes = [f"mode {k + 1} ({frequencies[k] * HARTREE_IN_CM1:.1f} cm^-1) below the cutoff of "
             f"{low_frequency_cutoff_cm1:g} cm^-1: not sampled" for k in np.flatnonzero(~sampled)]
    if not sampled.any():
        raise ConfigurationError(f"every mode lies below the low-frequency cutoff of {low_frequency_cutoff_cm1:g} cm^-1", where="cutoff")
    var_q, var_p = mode_variances(frequencies, temperature)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_samples, len(frequencies))) * np.sqrt(var_q) * sampled
    p = rng.standard_normal((n_samples, len(frequencies))) * np.sqrt(var_p) * sampled
    n = modes.n_atoms
    inverse_sqrt = 1.0 / np.sqrt(np.repeat(modes.masses, 3))
    positions = modes.positions[None] + ((q @ modes.modes.T) * inverse_sqrt).reshape(n_samples, n, 3)
    velocities = ((p @ modes.modes.T) * inverse_sqrt).reshape(n_samples, n, 3)
    masses = np.asarray(modes.masses, dtype=float)
    # the centre of mass of every structure is the reference's (exactly, not only to first order)
    shift = np.einsum("i,sij->sj", masses, positions - modes.positions[None]) / masses.sum()
    positions = positions - shift[:, None, :]
    if remove_rotations and n > 1:
        wanted = 0.5 * np.sum(p * p, axis=1)
        axis = molecular_axis(modes.positions, masses) if modes.linear else None
        velocities = remove_rotation(positions, velocities, masses, axis)
        kinetic = 0.5 * np.einsum("i,sij->s", masses, velocities * velocities)
        scale = np.sqrt(np.divide(wanted, kinetic, out=np.ones_like(wanted), where=kinetic > 0))
        velocities = velocities * scale[:, None, None]
    return WignerSample(np.asarray(modes.numbers), masses, positions, velocities, q, p, sampled, float(temperature),
                        int(seed), notes)
