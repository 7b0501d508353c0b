"""Training loss and error metrics of the multi-state network (label masks respected, couplings phase-free)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import schnetpack.properties as structure
import torch

from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, NACS, dipole_pairs, state_pairs
from exsnn.model.phase_free import pair_sign_table, per_sample_pair_errors, phase_free_squared_error, sign_vector_histogram
from exsnn.units import ANGSTROM_IN_BOHR, HARTREE_IN_EV

#: checkpoint metric -> the logged validation value it monitors (`Recipe.checkpoint_metric`): the whole loss, or its
#: energy and force terms with their weights (`MultiStateTask` logs both); "last" monitors nothing: the run keeps its
#: final weights and does not stop early (a small validation set then only reports)
CHECKPOINT_METRICS: dict[str, str | None] = {"loss": "val_loss", "energies_forces": "val_energies_forces", "last": None}


@dataclass
class LossWeights:
    """Weights of the mean squared errors (each divided by its label's training variance, or in raw atomic units:
    see `loss_scales`)."""

    energies: float = 1.0
    forces: float = 1.0
    nacs: float = 1.0
    dipoles: float = 1.0
    gaps: float = 0.0  # adjacent-state gaps E_(i+1) - E_i: where they are small, FSSH hops; energies alone weigh them little
    small_gaps: float = 0.0  # relative errors of the adjacent gaps, error / (|gap| + SMALL_GAP_FLOOR): small gaps weigh most
    # diabatic head: the off-diagonal elements of H, squared (over the energy scale), so that the quasi-diabatic states
    # are as adiabatic as the labels allow: the one gauge of H that independent trainings agree on
    diabatic_couplings: float = 0.0
    # diabatic head: how its states turn around the labelled seam loops of the data, against the reference's
    # (`exsnn.model.seam_loss`): crossing, not touching, quasi-diabatic states at a seam; added by the task
    seam_loops: float = 0.0


@dataclass
class EnergyWindow:
    """Down-weights the labels of states far above the energies the dynamics can reach (one molecule).

    An active-learning campaign labels where its committee went, and an unconverged committee goes where the true
    surfaces are far too high to reach (the labels then teach it that they are high, which needs no precision). In a
    plain MSE such labels, tens of eV-squared apart, outweigh the region the trajectories actually cross. A state whose
    reference energy lies `excess` above `cap` (Hartree, absolute) counts 1 / (1 + (excess / width)^2) in the energy,
    force, gap and coupling terms (a pair takes the smaller weight of its two states); states below the cap count 1.
    The reweighting of energy-ranked errors is the idea of e.g. the weighted fits of reactive surfaces (Behler,
    Int. J. Quantum Chem. 115, 1032 (2015), section 5)."""

    cap: float
    width: float

    def __post_init__(self) -> None:
        if not (self.width > 0 and math.isfinite(self.width) and math.isfinite(self.cap)):
            raise ValueError(f"an energy window needs a finite cap and a positive width, got {self.cap!r}, {self.width!r}")

    def state_weights(self, energies: torch.Tensor) -> torch.Tensor:
        """(B, N) weights of the states from their reference energies (B, N), Hartree."""
        excess = (energies - self.cap).clamp_min(0.0) / self.width
        return 1.0 / (1.0 + excess * excess)


def pair_weights(state_weights: torch.Tensor) -> torch.Tensor:
    """(B, P) the smaller weight of the two states of every pair i < j, from state weights (B, N)."""
    rows, cols = zip(*state_pairs(state_weights.shape[1]))
    return torch.minimum(state_weights[:, list(rows)], state_weights[:, list(cols)])


#: Hartree (0.05 eV): the floor of the relative gap error, so that degenerate reference gaps keep a finite weight
SMALL_GAP_FLOOR = 0.05 / HARTREE_IN_EV


@dataclass
class LabelScales:
    """Typical sizes of the labels (atomic units) that normalise the loss terms."""

    energies: float = 1.0
    forces: float = 1.0
    nacs: float = 1.0
    dipoles: float = 1.0
    gaps: float = 1.0  # spread of the adjacent-state gaps about their mean

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def loss_scales(mode: str, scales: LabelScales) -> LabelScales:
    """The sizes the loss divides each label's errors by: the training set's label sizes ("normalised": every term is
    dimensionless, about 1 for a model that predicts the mean) or ones ("raw": mean squared errors in atomic units,
    Hartree^2 and (Hartree/Bohr)^2, as SchNetPack and SPaiNN train; forces then outweigh energies and couplings by the
    ratio of their squared sizes)."""
    if mode == "normalised":
        return scales
    if mode == "raw":
        return LabelScales()
    raise ValueError(f"unknown loss mode {mode!r}; expected 'normalised' or 'raw'")


def smooth_reference(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """h_ij = (E_j - E_i) d_ij per atom and pair (A, P, 3) from the reference energies and NACs."""
    energies = batch[ENERGIES]
    n_states = energies.shape[1]
    pairs = torch.tensor(state_pairs(n_states), device=energies.device).reshape(-1, 2)
    gaps = energies[:, pairs[:, 1]] - energies[:, pairs[:, 0]]
    return batch[NACS] * gaps[batch[structure.idx_m]][:, :, None]


def _transition_pair_columns(n_states: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Columns of the dipole pairs that are permanent (i == j) and transition (i < j), and the transition pairs."""
    pairs = dipole_pairs(n_states)
    permanent = [k for k, (i, j) in enumerate(pairs) if i == j]
    transition = [k for k, (i, j) in enumerate(pairs) if i < j]
    return permanent, transition, [pairs[k] for k in transition]


def compute_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], weights: LossWeights, scales: LabelScales,
    window: EnergyWindow | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted, normalised loss and its parts; couplings and transition dipoles share one sign vector per sample;
    with an energy `window`, the labels of states far above its cap count less."""
    idx_m = batch[structure.idx_m]
    B, N = batch[ENERGIES].shape
    parts: dict[str, torch.Tensor] = {}
    zero = out["energies"].sum() * 0.0
    mask_e = batch[f"{ENERGIES}_mask"]
    # (B, N) weight of every state's labels (ones without a window; frames without energies count fully elsewhere)
    w = window.state_weights(batch[ENERGIES]) if window is not None else torch.ones_like(batch[ENERGIES])
    w = torch.where(mask_e[:, None], w, 1.0)
    error_e = out["energies"] - batch[ENERGIES]
    parts["energies"] = (w * error_e**2)[mask_e].mean() / scales.energies**2 if mask_e.any() else zero
    gap_w = torch.minimum(w[:, 1:], w[:, :-1])[mask_e] if N > 1 else None
    if weights.gaps > 0 and N > 1 and mask_e.any():
        error = error_e[mask_e]
        parts["gaps"] = (gap_w * (error[:, 1:] - error[:, :-1]) ** 2).mean() / scales.gaps**2
    if weights.small_gaps > 0 and N > 1 and mask_e.any():
        # the gap sets the hopping region and the NACs' size there (d = h / gap): a 30 meV error matters at a 0.15 eV gap
        # and not at a 4 eV one, which an energy or absolute-gap loss cannot tell apart
        reference = torch.diff(batch[ENERGIES][mask_e], dim=1)
        error = torch.diff(out["energies"][mask_e], dim=1) - reference
        parts["small_gaps"] = (gap_w * (error / (reference.abs() + SMALL_GAP_FLOOR)).pow(2)).mean()
    if weights.diabatic_couplings > 0 and N > 1 and "hamiltonian" in out:
        rows, cols = zip(*state_pairs(N))
        parts["diabatic_couplings"] = (out["hamiltonian"][:, list(rows), list(cols)] ** 2).mean() / scales.energies**2
    if "forces" in out:
        mask_f = batch[f"{FORCES}_mask"][idx_m]
        squared = (out["forces"] - batch[FORCES]) ** 2 * w[idx_m][:, :, None]  # (A, N, 3)
        parts["forces"] = squared[mask_f].mean() / scales.forces**2 if mask_f.any() else zero
    # couplings: NACs and transition dipoles share one state-sign vector per sample; each sample contributes only the
    # labels it has (a frame with dipoles but no NACs does not pull the predicted NACs towards zero), and the part is
    # the mean normalised squared error over every labelled vector component
    mask_n = batch[f"{NACS}_mask"] & mask_e
    mask_d = batch[f"{DIPOLES}_mask"]
    plus_parts, minus_parts, pair_lists = [], [], []
    counts = torch.zeros(B, dtype=out["energies"].dtype, device=idx_m.device)  # labelled components per sample
    if "smooth_nacs" in out and mask_n.any():
        plus, minus = per_sample_pair_errors(out["smooth_nacs"], smooth_reference(batch), idx_m, B)
        w_pairs = pair_weights(w)
        plus_parts.append(torch.where(mask_n[:, None], plus * w_pairs, 0.0) / scales.nacs**2)
        minus_parts.append(torch.where(mask_n[:, None], minus * w_pairs, 0.0) / scales.nacs**2)
        pair_lists += list(state_pairs(N))
        counts = counts + mask_n * torch.bincount(idx_m, minlength=B) * plus.shape[1] * 3
    if "dipoles" in out and mask_d.any():
        permanent, transition, transition_pairs = _transition_pair_columns(N)
        diff = out["dipoles"][:, permanent] - batch[DIPOLES][:, permanent]
        parts["permanent_dipoles"] = (diff[mask_d] ** 2).mean() / scales.dipoles**2
        if transition:
            plus, minus = per_sample_pair_errors(out["dipoles"][:, transition], batch[DIPOLES][:, transition], None, B)
            plus_parts.append(torch.where(mask_d[:, None], plus, 0.0) / scales.dipoles**2)
            minus_parts.append(torch.where(mask_d[:, None], minus, 0.0) / scales.dipoles**2)
            pair_lists += transition_pairs
            counts = counts + mask_d * len(transition) * 3
    if plus_parts:
        best, _ = phase_free_squared_error(
            torch.cat(plus_parts, 1), torch.cat(minus_parts, 1), pair_sign_table(N, pair_lists, idx_m.device)
        )
        labelled = counts > 0
        parts["couplings"] = best[labelled].sum() / counts[labelled].sum().clamp_min(1.0)
    total = (
        weights.energies * parts["energies"]
        + weights.forces * parts.get("forces", zero)
        + weights.nacs * parts.get("couplings", zero)
        + weights.dipoles * parts.get("permanent_dipoles", zero)
        + weights.gaps * parts.get("gaps", zero)
        + weights.small_gaps * parts.get("small_gaps", zero)
        + weights.diabatic_couplings * parts.get("diabatic_couplings", zero)
    )
    return total, parts


class ErrorTable:
    """Accumulates MAE and RMSE per property and state (couplings phase-free) over batches."""

    def __init__(self, n_states: int) -> None:
        self.n_states = n_states
        self.sums: dict[str, list[np.ndarray]] = {}
        self.sign_choices: list[torch.Tensor] = []

    def _add(self, key: str, errors: torch.Tensor) -> None:
        """errors (rows, columns): absolute errors per column (state or pair)."""
        e = errors.detach().double().cpu().numpy()
        entry = self.sums.setdefault(key, [np.zeros(e.shape[1]), np.zeros(e.shape[1]), np.zeros(e.shape[1])])
        entry[0] += np.abs(e).sum(0)
        entry[1] += (e**2).sum(0)
        entry[2] += e.shape[0]

    def update(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        idx_m = batch[structure.idx_m]
        B, N = batch[ENERGIES].shape
        mask_e = batch[f"{ENERGIES}_mask"]
        self._add("energies", (out["energies"] - batch[ENERGIES])[mask_e])
        if "forces" in out:
            mask_f = batch[f"{FORCES}_mask"][idx_m]
            diff = (out["forces"] - batch[FORCES])[mask_f]  # (atoms, N, 3)
            self._add("forces", diff.permute(0, 2, 1).reshape(-1, N))
        mask_n = batch[f"{NACS}_mask"] & mask_e
        if "smooth_nacs" in out and mask_n.any():
            reference = smooth_reference(batch)
            plus, minus = per_sample_pair_errors(out["smooth_nacs"], reference, idx_m, B)
            _, best = phase_free_squared_error(plus, minus, pair_sign_table(N, device=idx_m.device))
            self.sign_choices.append(best[mask_n])
            signs = pair_sign_table(N, device=idx_m.device)[best][idx_m][:, :, None].to(reference.dtype)  # (A, P, 1)
            atoms = mask_n[idx_m]
            self._add(
                "smooth_nacs",
                (out["smooth_nacs"] - signs * reference)[atoms].permute(0, 2, 1).reshape(-1, reference.shape[1]),
            )
            self._add(
                "nacs", (out["nacs"] - signs * batch[NACS])[atoms].permute(0, 2, 1).reshape(-1, reference.shape[1])
            )
        mask_d = batch[f"{DIPOLES}_mask"]
        if "dipoles" in out and mask_d.any():
            _, transition, transition_pairs = _transition_pair_columns(N)
            reference = batch[DIPOLES].clone()
            if transition:
                plus, minus = per_sample_pair_errors(out["dipoles"][:, transition], reference[:, transition], None, B)
                _, best = phase_free_squared_error(plus, minus, pair_sign_table(N, transition_pairs, idx_m.device))
                reference[:, transition] = reference[:, transition] * pair_sign_table(
                    N, transition_pairs, idx_m.device
                )[best][:, :, None].to(reference.dtype)
            self._add("dipoles", (out["dipoles"] - reference)[mask_d].permute(0, 2, 1).reshape(-1, reference.shape[1]))

    def summary(self) -> dict[str, Any]:
        """MAE/RMSE per column in report units: energies meV, forces meV/Angstrom, smooth NACs meV/Angstrom,
        NACs 1/Bohr, dipoles e*Bohr; plus how often each sign vector was chosen."""
        factors = {
            "energies": 1000 * HARTREE_IN_EV,
            "forces": 1000 * HARTREE_IN_EV * ANGSTROM_IN_BOHR,
            "smooth_nacs": 1000 * HARTREE_IN_EV * ANGSTROM_IN_BOHR,
            "nacs": 1.0,
            "dipoles": 1.0,
        }
        units = {
            "energies": "meV",
            "forces": "meV/Angstrom",
            "smooth_nacs": "meV/Angstrom",
            "nacs": "1/Bohr",
            "dipoles": "e*Bohr",
        }
        N = self.n_states
        columns = {
            "energies": [f"S{s}" for s in range(N)],
            "forces": [f"S{s}" for s in range(N)],
            "smooth_nacs": [f"{i}{j}" for i, j in state_pairs(N)],
            "nacs": [f"{i}{j}" for i, j in state_pairs(N)],
            "dipoles": [f"{i}{j}" for i, j in dipole_pairs(N)],
        }
        table: dict[str, Any] = {}
        for key, (abs_sum, sq_sum, count) in self.sums.items():
            n = np.maximum(count, 1)
            table[key] = {
                "unit": units[key],
                "mae": dict(zip(columns[key], (abs_sum / n * factors[key]).tolist())),
                "rmse": dict(zip(columns[key], (np.sqrt(sq_sum / n) * factors[key]).tolist())),
            }
        if self.sign_choices:
            table["sign_vectors_chosen"] = sign_vector_histogram(torch.cat(self.sign_choices), N)
        return table


def format_error_table(table: dict[str, Any]) -> str:
    lines = [f"{'property':14s} {'unit':14s} {'column':>6s} {'MAE':>12s} {'RMSE':>12s}"]
    for key, entry in table.items():
        if key == "sign_vectors_chosen":
            continue
        for column, mae in entry["mae"].items():
            lines.append(f"{key:14s} {entry['unit']:14s} {column:>6s} {mae:12.4f} {entry['rmse'][column]:12.4f}")
    if "sign_vectors_chosen" in table:
        lines.append(
            "phase-free sign vectors chosen (state signs p0 p1 ...): "
            + ", ".join(f"{k} {v}" for k, v in table["sign_vectors_chosen"].items())
        )
    return "\n".join(lines)


__all__ = ["ErrorTable", "LabelScales", "LossWeights", "compute_loss", "format_error_table", "loss_scales", "smooth_reference"]
