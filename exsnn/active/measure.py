"""Committee disagreement per structure, the error of the committee mean, and thresholds calibrated on validation data.

Three disagreement measures per structure (atomic units), each the largest over its components:

* energies: the spread (standard deviation over members) of each state's energy, max over states (Hartree);
* forces: the norm of the spread of the force vector on each atom, max over atoms (and over the states asked for;
  in dynamics the active state's), Hartree/Bohr;
* couplings: the spread of the sign-aligned NAC vectors (members aligned by the consistent state-sign vector before
  comparing) times the pair's gap, i.e. the spread of the smooth coupling h = dE d, max over atoms and pairs
  (Hartree/Bohr; finite at degeneracies where d itself is not).

In dynamics a fourth measure is recorded (not thresholded: it needs a trajectory's velocities and coefficients,
which validation frames do not have): the spread over members of the fewest-switches probability of leaving the
active state a over one step, g_aj = 2 Re(c_a* c_j) (v . d_aj) dt / |c_a|^2 (Tully 1990; before clipping at zero),
with each member's sign-aligned NACs and the trajectory's own velocities and coefficients, max over targets j
(`hop_disagreement`). It says where the members would hop differently, which the NAC spread alone does not: a large
NAC spread far from a hop (c_j = 0, or v perpendicular to d) changes nothing.

Thresholds (MLatom-style calibration, per property, adapted every iteration): lower = median + k MAD of the
disagreement on frames the committee was not trained on (validation and held-out test frames), upper = factor x lower
but never below a floor (by default 0.1 eV, 1 eV/Angstrom, 1 eV/Angstrom), so that thresholds that tighten as the
committee improves keep selecting candidates without stopping trajectories the dynamics can trust; and neither rises
above a cap (by default PyRAI2MD's record / stop values, 0.02 / 0.05 Hartree and 0.06 / 0.15 Hartree/Bohr), so that a
committee unsure everywhere does not calibrate itself loose.
A structure whose disagreement exceeds `lower`
is a labelling candidate; one that exceeds `upper` in a measure of `stop_on` is not trusted (its trajectory stops
there). By default couplings do not stop trajectories when the members also drive the ensemble alone
(`ThresholdConfig.stop_on`): their populations' spread then carries what the coupling disagreement does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from exsnn.active.config import MEASURES, ThresholdConfig
from exsnn.data.frame import FrameArrays
from exsnn.data.phases import pair_signs, state_signs_from_nacs
from exsnn.data.properties import state_pairs
from exsnn.model.potential import ModelPotential
from exsnn.potentials.base import PotentialOutput
from exsnn.units import ANGSTROM_IN_BOHR, EV_IN_HARTREE, HARTREE_IN_EV

#: report units: eV, eV/Angstrom, eV/Angstrom
TO_REPORT = {
    "energies": HARTREE_IN_EV,
    "forces": HARTREE_IN_EV * ANGSTROM_IN_BOHR,
    "couplings": HARTREE_IN_EV * ANGSTROM_IN_BOHR,
}


def disagreement(potential: ModelPotential, out: PotentialOutput) -> np.ndarray:
    """(B, 3) energies/forces/couplings disagreement of the structures of the committee's last call (see module
    docstring); `out` is that call's output (for the gaps)."""
    spread = potential.last_disagreement
    energies = spread["energies"].amax(dim=1)
    forces = (
        torch.linalg.vector_norm(spread["forces"], dim=-1)
        if "forces" in spread
        else torch.zeros_like(energies)[:, None]
    )
    forces = forces.flatten(1).amax(dim=1)
    couplings = torch.zeros_like(energies)
    if "nacs" in spread and potential.n_states > 1:
        pairs = torch.tensor(state_pairs(potential.n_states), device=out.energies.device)
        gaps = (out.energies[:, pairs[:, 1]] - out.energies[:, pairs[:, 0]]).abs()  # (B, P)
        norms = torch.linalg.vector_norm(spread["nacs"], dim=-1).amax(dim=-1)  # (B, P)
        couplings = (norms * gaps).amax(dim=1)
    return torch.stack([energies, forces, couplings], dim=1).detach().cpu().numpy()


def hop_disagreement(member_nacs: torch.Tensor, velocities: torch.Tensor, coefficients: torch.Tensor,
                     active: torch.Tensor, dt: float) -> np.ndarray:
    """(B,) spread (standard deviation over members) of the hopping probability out of the active state over one
    step, max over target states, capped at 1 (module docstring). member_nacs (K, B, P, n, 3) sign-aligned across
    members (1/Bohr), velocities (B, n, 3) (Bohr / atomic time), coefficients (B, N) complex, active (B,), dt in atomic
    time. A global sign of a pair cancels: the spread is the same whichever member's signs the coefficients follow."""
    K, B = member_nacs.shape[:2]
    N = coefficients.shape[1]
    T = (member_nacs * velocities[None, :, None]).sum(dim=(-1, -2))  # (K, B, P): v . d_ij, i < j
    full = torch.zeros((K, B, N, N), dtype=T.dtype, device=T.device)
    for p, (i, j) in enumerate(state_pairs(N)):
        full[:, :, i, j], full[:, :, j, i] = T[:, :, p], -T[:, :, p]
    rows = torch.arange(B, device=T.device)
    c_a = coefficients[rows, active]  # (B,)
    density = (c_a.conj()[:, None] * coefficients).real  # Re(c_a* c_j), (B, N)
    flux = 2.0 * dt * density / (c_a.abs() ** 2).clamp_min(1e-300)[:, None]
    spread = (flux[None] * full[:, rows, active]).std(dim=0)  # (B, N)
    spread[rows, active] = 0.0
    return spread.amax(dim=1).clamp(max=1.0).detach().cpu().numpy()


@dataclass
class Thresholds:
    """Lower and upper thresholds per measure (atomic units), how they were obtained, and the measures whose upper
    threshold stops a trajectory (`ThresholdConfig.stop_on`; all three in folders written before it existed)."""

    lower: dict[str, float]
    upper: dict[str, float]
    source: str
    stop_on: list[str] = field(default_factory=lambda: list(MEASURES))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ratios(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """values (..., 3) -> (largest value / lower over the measures, largest value / upper over the `stop_on`
        measures; 0 where none stops), (...) each."""
        lower = np.array([self.lower[m] for m in MEASURES])
        upper = np.array([self.upper[m] if m in self.stop_on else np.inf for m in MEASURES])
        return (values / lower).max(axis=-1), (values / upper).max(axis=-1)


def committee_predictions(
    potential: ModelPotential, arrays: FrameArrays, indices: np.ndarray
) -> tuple[PotentialOutput, np.ndarray]:
    """Committee mean (energies, forces of all states, NACs) and disagreement (K, 3) at the frames `indices`
    (all frames of one molecule)."""
    positions = torch.as_tensor(np.stack([arrays.frame(int(k)).positions for k in indices]), dtype=torch.float64)
    out = potential.compute(positions, all_forces=True, nacs=True)
    return out, disagreement(potential, out)


def calibrate(potential: ModelPotential, arrays: FrameArrays, val: np.ndarray, config: ThresholdConfig) -> Thresholds:
    """Thresholds from the committee's disagreement on the frames `val` (not trained on), or the fixed values of the
    config."""
    if config.mode == "fixed":
        lower = {
            "energies": config.energies_ev * EV_IN_HARTREE,  # type: ignore[operator]
            "forces": config.forces_ev_a / TO_REPORT["forces"],  # type: ignore[operator]
            "couplings": config.couplings_ev_a / TO_REPORT["couplings"],
        }  # type: ignore[operator]
        source = "fixed (campaign.toml)"
    else:
        _, values = committee_predictions(potential, arrays, val)
        median = np.median(values, axis=0)
        mad = np.median(np.abs(values - median), axis=0)
        floors = np.array([1e-5, 1e-5, 1e-6])  # a committee that agrees perfectly on few frames still gets a band
        lower = dict(zip(MEASURES, np.maximum(median + config.k_mad * mad, floors).tolist()))
        source = f"calibrated: median + {config.k_mad:g} MAD of the disagreement on {len(val)} frames not trained on"
    return bounded_thresholds(lower, config, source)


def bounded_thresholds(lower: dict[str, float], config: ThresholdConfig, source: str) -> Thresholds:
    """Thresholds from the lower ones (atomic units, per measure): upper = factor x lower, at least the floor; in the
    calibrated mode both capped (module docstring), and `source` says which caps bound."""
    floors = in_atomic_units(config, "upper_floor")
    upper = {m: max(config.upper_factor * v, floors[m]) for m, v in lower.items()}
    if config.mode != "fixed":
        caps = {"lower": in_atomic_units(config, "lower_cap"), "upper": in_atomic_units(config, "upper_cap")}
        capped = [f"{m} {kind}" for kind, values in (("lower", lower), ("upper", upper)) for m in MEASURES
                  if values[m] > caps[kind][m]]
        upper = {m: min(v, caps["upper"][m]) for m, v in upper.items()}
        lower = {m: min(v, caps["lower"][m], upper[m]) for m, v in lower.items()}
        if capped:
            source += f"; capped ([thresholds] *_cap_*): {', '.join(capped)}"
    stop_on = list(MEASURES) if config.stop_on is None else list(config.stop_on)
    return Thresholds(lower=lower, upper=upper, source=source, stop_on=stop_on)


def in_atomic_units(config: ThresholdConfig, prefix: str) -> dict[str, float]:
    """The config's `prefix`_energies_ev, _forces_ev_a, _couplings_ev_a values in atomic units, per measure."""
    return {
        "energies": getattr(config, f"{prefix}_energies_ev") * EV_IN_HARTREE,
        "forces": getattr(config, f"{prefix}_forces_ev_a") / TO_REPORT["forces"],
        "couplings": getattr(config, f"{prefix}_couplings_ev_a") / TO_REPORT["couplings"],
    }


def committee_errors(
    potential: ModelPotential, arrays: FrameArrays, indices: np.ndarray
) -> dict[str, dict[str, float]]:
    """MAE of the committee mean on frames `indices`: energies (meV) and forces (meV/Angstrom) per state, NACs
    (1/Bohr, phase-free with one state-sign vector per frame) per pair."""
    if len(indices) == 0:
        return {}
    out, _ = committee_predictions(potential, arrays, indices)
    N = arrays.n_states
    frames = [arrays.frame(int(k)) for k in indices]
    energies = np.stack([f.energies for f in frames])
    forces = np.stack([f.forces for f in frames])  # (K, n, N, 3)
    result = {
        "energies_meV": {
            f"S{s}": float(v)
            for s, v in enumerate(1000 * HARTREE_IN_EV * np.abs(out.energies.numpy() - energies).mean(0))
        },
        "forces_meV_per_A": {
            f"S{s}": float(v)
            for s, v in enumerate(
                1000
                * TO_REPORT["forces"]
                * np.abs(out.all_forces.numpy() - forces.transpose(0, 2, 1, 3)).mean((0, 2, 3))
            )
        },  # type: ignore[union-attr]
    }
    if out.nacs is not None and all(f.nacs is not None for f in frames):
        reference = torch.as_tensor(np.stack([f.nacs for f in frames]).transpose(0, 2, 1, 3))  # (K, P, n, 3)
        signs = state_signs_from_nacs(reference, out.nacs, N)
        aligned = reference * pair_signs(signs, N)[:, :, None, None]
        mae = (out.nacs - aligned).abs().mean(dim=(0, 2, 3)).numpy()
        result["nacs_per_bohr"] = {f"{i}{j}": float(v) for (i, j), v in zip(state_pairs(N), mae)}
    return result
