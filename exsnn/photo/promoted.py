"""Promoted-density sampling of initial conditions for a laser pulse, through `promdens`.

The promoted density approach (Janos, Slavicek and Curchod, J. Chem. Theory Comput. 20, 4005 (2024)) samples
(geometry, state, excitation time) triples with probability |mu_0k|^2 times the Wigner transform of the pulse
envelope at the geometry's excitation energy: a pulse selects geometries by resonance and spreads the excitation
over its duration. `promdens` (PyPI) does the sampling; this module feeds it exsnn's excitations in atomic units,
keeps its output files in a temporary folder and its printing off the terminal, and returns the samples. Negative
quasi-probabilities of the Wigner transform (short or chirped pulses) are skipped (promdens' 'ignore').
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from exsnn.errors import ConfigurationError
from exsnn.units import AU_TIME_IN_FS, FS_IN_AU_TIME

ENVELOPES = ("gauss", "lorentz", "sech", "sin", "sin2")


@dataclass
class PromotedSample:
    """S sampled initial conditions: geometry index, state (1 = S1), excitation time (fs, relative to the pulse
    centre t0 = 0)."""

    geometry: np.ndarray
    state: np.ndarray
    time_fs: np.ndarray


def promoted_density(excitation: np.ndarray, transition_dipoles: np.ndarray, n_samples: int, omega: float,
                     fwhm_fs: float, envelope: str = "gauss", chirp: float = 0.0, seed: int = 0) -> PromotedSample:
    """Sample n_samples initial conditions from excitation energies (G, K) Hartree and S0 -> Sk transition dipoles
    (G, K, 3) e*Bohr for a pulse of carrier frequency omega (Hartree), intensity FWHM fwhm_fs, envelope shape and
    linear chirp (atomic units) centred at t = 0."""
    try:
        from promdens.promdens import InitialConditions, LaserPulse
    except ImportError:
        raise ConfigurationError("promoted-density sampling needs promdens: pip install promdens") from None
    if envelope not in ENVELOPES:
        raise ConfigurationError(f"envelope must be one of {', '.join(ENVELOPES)}, got {envelope!r}", where="envelope")
    if n_samples < 1 or not omega > 0 or not fwhm_fs > 0:
        raise ConfigurationError("promoted-density sampling needs samples >= 1, omega > 0 and a positive FWHM", where="pulse")
    excitation = np.atleast_2d(np.asarray(excitation, dtype=float))
    norms = np.linalg.norm(np.asarray(transition_dipoles, dtype=float).reshape(*excitation.shape, 3), axis=2)
    usable = np.all(np.isfinite(excitation), axis=1) & np.all(np.isfinite(norms), axis=1)
    if not usable.any():
        raise ConfigurationError("no geometry with finite excitation energies and transition dipoles", where="excitations")
    index = np.flatnonzero(usable)
    conditions = InitialConditions(nsamples=len(index), nstates=excitation.shape[1])
    conditions.traj_index = index
    conditions.de = excitation[index].T.copy()  # promdens: (states, samples)
    conditions.tdm = norms[index].T.copy()
    pulse = LaserPulse(omega=float(omega), fwhm=float(fwhm_fs * FS_IN_AU_TIME), envelope_type=envelope, t0=0.0, lchirp=float(chirp))
    with tempfile.TemporaryDirectory(prefix="exsnn-promdens-") as folder, contextlib.redirect_stdout(io.StringIO()):
        conditions.calc_field(pulse)
        conditions.sample_initial_conditions(n_samples, neg_handling="ignore", preselect=True, seed=seed,
                                             output_fname=os.path.join(folder, "pda.dat"))
        samples = np.array(conditions.ics)
    return PromotedSample(samples[0].astype(np.int64), samples[2].astype(np.int64), samples[1] * AU_TIME_IN_FS)
