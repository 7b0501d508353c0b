"""Absorption spectra by the nuclear ensemble approach, with a bootstrap band over the geometries.

Crespo-Otero and Barbatti, Theor. Chem. Acc. 131, 1237 (2012), eq. 8: for G geometries x_g with vertical excitation
energies dE_gk and oscillator strengths f_gk (states k),

    sigma(E) = pi e^2 hbar / (2 m_e c eps0) * 1/G sum_g sum_k f_gk g(E - dE_gk; delta) [* dE_gk / E]

with g a line shape of unit area (Gaussian or Lorentzian of full width at half maximum delta). Without the optional
factor dE/E (`energy_factor=False`, the default) every line integrates to exactly f times the constant
pi e^2 hbar / (2 m_e c eps0), the Thomas-Reiche-Kuhn normalisation of the oscillator strength; in atomic units that is
2 pi^2 / c Bohr^2 Hartree (1.0975 Angstrom^2 eV). The molar absorptivity is
eps(E) = N_A sigma(E) / (1000 cm^3/L ln 10) in M^-1 cm^-1.

The band: the spectrum of B bootstrap resamples of the geometries (drawn with replacement), its percentiles at each
energy (default a 95% band).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.units import BOHR_IN_ANGSTROM, HARTREE_IN_EV

#: speed of light in atomic units (CODATA 2018: 1 / fine-structure constant)
SPEED_OF_LIGHT_AU = 137.035999084
#: pi e^2 hbar / (2 m_e c eps0) in Bohr^2 Hartree (atomic units: e = hbar = m_e = 4 pi eps0 = 1)
LINE_STRENGTH_AU = 2 * np.pi**2 / SPEED_OF_LIGHT_AU
AVOGADRO = 6.02214076e23
#: sigma in Angstrom^2 -> molar absorptivity in M^-1 cm^-1 (1 Angstrom^2 = 1e-16 cm^2)
ANGSTROM2_TO_MOLAR_ABSORPTIVITY = 1e-16 * AVOGADRO / (1000.0 * np.log(10.0))
SHAPES = ("gaussian", "lorentzian")


def line_shape(energies: np.ndarray, centres: np.ndarray, fwhm: float, shape: str = "gaussian") -> np.ndarray:
    """Unit-area line shapes g(E - centre) (..., E) for energies (E,) and centres (...), in 1/energy unit."""
    if shape not in SHAPES:
        raise ConfigurationError(f"line shape must be one of {', '.join(SHAPES)}, got {shape!r}", where="shape")
    if not fwhm > 0:
        raise ConfigurationError(f"the broadening (FWHM) must be positive, got {fwhm}", where="fwhm")
    x = np.asarray(energies)[None, :] - np.asarray(centres).reshape(-1, 1)
    if shape == "gaussian":
        sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
        values = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    else:
        gamma = fwhm / 2
        values = gamma / np.pi / (x * x + gamma * gamma)
    return values.reshape(*np.shape(centres), len(energies))


def line_contributions(grid: np.ndarray, excitations: np.ndarray, strengths: np.ndarray, fwhm: float,
                       shape: str = "gaussian", energy_factor: bool = False) -> np.ndarray:
    """Cross-section contribution (G, K, E) in Bohr^2 of each geometry's line of each state on an energy grid (E,)
    Hartree, from excitation energies and oscillator strengths (G, K) (NaN: a missing value, left out); the spectrum
    is their mean over the geometries."""
    excitations = np.asarray(excitations, dtype=float)
    strengths = np.asarray(strengths, dtype=float)
    present = np.isfinite(excitations) & np.isfinite(strengths)
    shapes = line_shape(grid, np.where(present, excitations, 0.0), fwhm, shape)  # (G, K, E)
    if energy_factor:
        shapes = shapes * (np.where(present, excitations, 0.0)[:, :, None] / np.where(grid > 0, grid, np.inf)[None, None, :])
    return LINE_STRENGTH_AU * np.where(present, strengths, 0.0)[:, :, None] * shapes


def cross_sections(grid: np.ndarray, excitations: np.ndarray, strengths: np.ndarray, fwhm: float, shape: str = "gaussian",
                   energy_factor: bool = False) -> np.ndarray:
    """Per-state cross sections (E, K) in Bohr^2 of the ensemble (the mean of `line_contributions`); the total is
    the sum over states."""
    if len(excitations) == 0:
        raise ConfigurationError("no geometries to make a spectrum from", where="excitations")
    return line_contributions(grid, excitations, strengths, fwhm, shape, energy_factor).mean(axis=0).T


@dataclass
class Spectrum:
    """An absorption spectrum on an energy grid (E,) in eV: cross section per molecule in Angstrom^2 (total and per
    state (E, K)), molar absorptivity in M^-1 cm^-1, and the bootstrap band of the total cross section (low, high),
    with the settings that made it."""

    energy_ev: np.ndarray
    cross_section: np.ndarray
    per_state: np.ndarray
    band_low: np.ndarray | None
    band_high: np.ndarray | None
    fwhm_ev: float
    shape: str
    n_geometries: int
    n_bootstrap: int
    confidence: float
    state_labels: list[str]

    @property
    def molar_absorptivity(self) -> np.ndarray:
        return self.cross_section * ANGSTROM2_TO_MOLAR_ABSORPTIVITY

    def peaks_ev(self) -> list[float]:
        """Energy (eV) of the maximum of each state's contribution."""
        return [float(self.energy_ev[np.argmax(self.per_state[:, k])]) for k in range(self.per_state.shape[1])]

    def write_table(self, path: str | Path) -> Path:
        path = Path(path)
        columns = [self.energy_ev, self.cross_section, self.molar_absorptivity]
        header = ["energy_eV", "sigma_A2", "epsilon_M-1cm-1"]
        if self.band_low is not None and self.band_high is not None:
            columns += [self.band_low, self.band_high]
            header += [f"sigma_low_{self.confidence:.0%}", f"sigma_high_{self.confidence:.0%}"]
        columns += [self.per_state[:, k] for k in range(self.per_state.shape[1])]
        header += [f"sigma_{label}_A2" for label in self.state_labels]
        comment = (f"nuclear-ensemble absorption spectrum: {self.n_geometries} geometries, {self.shape} broadening, "
                   f"FWHM {self.fwhm_ev:g} eV, bootstrap {self.n_bootstrap}\n" + " ".join(header))
        np.savetxt(path, np.column_stack(columns), header=comment, fmt="%.8e")
        return path

    def plot(self, path: str | Path, title: str = "") -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        figure, axis = plt.subplots(figsize=(6.4, 4.0))
        if self.band_low is not None and self.band_high is not None:
            axis.fill_between(self.energy_ev, self.band_low, self.band_high, color="0.8",
                              label=f"{self.confidence:.0%} bootstrap band")
        # the total first and wide, the states dashed on top: a state that carries all the intensity stays visible
        axis.plot(self.energy_ev, self.cross_section, color="0.25", lw=2.6, alpha=0.6, label="total")
        for k, label in enumerate(self.state_labels):
            axis.plot(self.energy_ev, self.per_state[:, k], "--", lw=1.2, label=label)
        axis.set_xlabel("energy / eV")
        axis.set_ylabel(r"cross section / $\AA^2$ per molecule")
        right = axis.secondary_yaxis("right", functions=(lambda s: s * ANGSTROM2_TO_MOLAR_ABSORPTIVITY,
                                                          lambda e: e / ANGSTROM2_TO_MOLAR_ABSORPTIVITY))
        right.set_ylabel(r"$\varepsilon$ / M$^{-1}$ cm$^{-1}$")
        axis.set_title(title or f"{self.n_geometries} geometries, {self.shape} FWHM {self.fwhm_ev:g} eV", fontsize=9)
        axis.legend(fontsize=8)
        axis.set_ylim(bottom=0)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path


def absorption_spectrum(excitations: np.ndarray, strengths: np.ndarray, fwhm_ev: float = 0.2, shape: str = "gaussian",
                        energy_range_ev: tuple[float, float] | None = None, points: int = 1000,
                        n_bootstrap: int = 500, confidence: float = 0.95, seed: int = 0, energy_factor: bool = False,
                        state_labels: list[str] | None = None) -> Spectrum:
    """The spectrum of G geometries from excitation energies (G, K) in Hartree and oscillator strengths (G, K).
    energy_range_ev: the grid (default: the excitation energies +- 3 FWHM); n_bootstrap = 0: no band."""
    excitations = np.atleast_2d(np.asarray(excitations, dtype=float))
    strengths = np.atleast_2d(np.asarray(strengths, dtype=float))
    if excitations.shape != strengths.shape:
        raise ConfigurationError(f"excitation energies {excitations.shape} and oscillator strengths {strengths.shape} differ in shape")
    if not 0 < confidence < 1:
        raise ConfigurationError(f"the confidence level must lie between 0 and 1, got {confidence}", where="confidence")
    if points < 2:
        raise ConfigurationError(f"the grid needs at least 2 points, got {points}", where="points")
    finite = excitations[np.isfinite(excitations)]
    if finite.size == 0:
        raise ConfigurationError("no finite excitation energies", where="excitations")
    if energy_range_ev is None:
        energy_range_ev = (max(float(finite.min() * HARTREE_IN_EV) - 3 * fwhm_ev, 0.0),
                           float(finite.max() * HARTREE_IN_EV) + 3 * fwhm_ev)
    low, high = energy_range_ev
    if not 0 <= low < high:
        raise ConfigurationError(f"the energy range must satisfy 0 <= low < high, got {low}:{high} eV", where="range")
    grid_ev = np.linspace(low, high, points)
    grid = grid_ev / HARTREE_IN_EV
    fwhm = fwhm_ev / HARTREE_IN_EV
    to_angstrom2 = BOHR_IN_ANGSTROM**2
    G = len(excitations)
    per_state = np.zeros((points, excitations.shape[1]))
    per_geometry = np.empty((G, points))  # each geometry's total line, for the bootstrap
    for start in range(0, G, 256):  # chunks keep (geometries, states, points) small
        chunk = line_contributions(grid, excitations[start:start + 256], strengths[start:start + 256], fwhm, shape,
                                   energy_factor) * to_angstrom2
        per_state += chunk.sum(axis=0).T
        per_geometry[start:start + 256] = chunk.sum(axis=1)
    per_state /= G
    band_low = band_high = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        counts = np.stack([np.bincount(rng.integers(0, G, G), minlength=G) for _ in range(n_bootstrap)])
        totals = counts @ per_geometry / G
        tail = 100 * (1 - confidence) / 2
        band_low, band_high = np.percentile(totals, [tail, 100 - tail], axis=0)
    labels = state_labels or [f"S{k + 1}" for k in range(excitations.shape[1])]
    return Spectrum(grid_ev, per_state.sum(axis=1), per_state, band_low, band_high, float(fwhm_ev), shape,
                    len(excitations), int(n_bootstrap), float(confidence), labels)
