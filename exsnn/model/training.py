"""Training runs and committees: data, Lightning trainer (checkpoints, resume, early stopping, LR schedule, CSV and
TensorBoard logs), learning-curve plot, test error table, and the saved model file used for inference."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, NACS, state_pairs
from exsnn.data.store import read_frames
from exsnn.data.torch_data import ExcitedStateDataModule
from exsnn.errors import ConfigurationError, DataError, ExsnnWarning
from exsnn.model.loss import CHECKPOINT_METRICS, EnergyWindow, LabelScales, LossWeights, format_error_table, loss_scales
from exsnn.model.network import ArchitectureConfig, MultiStateNetwork, NetworkConfig, check_coupling_symmetry
from exsnn.model.task import MultiStateTask
from exsnn.units import EV_IN_HARTREE

MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class Recipe:
    """A named set of training defaults: optimiser, batch size, schedule, budget, loss weighting and early stopping.
    `TrainingConfig` takes every value it is not given from its recipe ("auto" values adapt to the training-set size
    when the run starts, see `TrainingConfig.plan`)."""

    description: str
    batch_size: int | str  # "auto": n_train // 5 clamped to 8..32
    learning_rate: float  # the peak learning rate (AdamW)
    schedule: str  # "plateau" (ReduceLROnPlateau on val_loss), "cosine" (linear warm-up, cosine decay per step), "none"
    max_epochs: int | None
    max_steps: int | str | None  # "auto": 500 epochs' worth of steps, clamped to 20000..200000
    patience: int  # early stopping on val_loss, in epochs (validation checks); 0: no early stopping
    loss: str = "normalised"  # "normalised": each MSE divided by its label's training variance; "raw": atomic units
    weights: dict[str, float] = field(default_factory=lambda: asdict(LossWeights()))
    lr_patience: int = 15
    lr_factor: float = 0.5
    warmup: float = 0.0  # fraction of the step budget spent ramping the learning rate up linearly (cosine schedule)
    final_lr_factor: float = 0.01  # the cosine schedule ends at learning_rate * final_lr_factor
    weight_decay: float = 0.01  # AdamW (torch's default, as SchNetPack/SPaiNN use it)
    # what picks the kept checkpoint and stops early: "loss" (the whole validation loss), "energies_forces" (its
    # energy and force terms with their weights: what the dynamics runs on; the dipole and coupling terms, noisy on
    # small validation sets, then only shape the training) or "last" (the final weights, no early stopping)
    checkpoint_metric: str = "loss"


#: issue #18's first step-budgeted recipe (kept by name: campaigns that pin it train as they were validated)
_EXSNN_V2 = Recipe(
    "budget in optimiser steps (500 epochs' worth, 20000..200000), batch n_train // 5 (8..32), AdamW 5e-4 with a "
    "2% linear warm-up and cosine decay to 1% per step, variance-normalised MSEs weighted energies 1, forces 4, "
    "couplings 1, dipoles 1, early stopping after 200 epochs without improvement",
    batch_size="auto", learning_rate=5e-4, schedule="cosine", max_epochs=None, max_steps="auto", patience=200,
    weights={"energies": 1.0, "forces": 4.0, "nacs": 1.0, "dipoles": 1.0, "gaps": 0.0, "small_gaps": 0.0,
             "diabatic_couplings": 0.0, "seam_loops": 0.0},
    warmup=0.02)


#: issue #18's second recipe, the base of the default
_EXSNN_V3 = replace(
    _EXSNN_V2, learning_rate=1e-3,
    description="exsnn-v2 with a peak learning rate of 1e-3 (issue #18, 5-fold cross-validation in "
                "benchmarks/bench_training_recipe.py: ahead of exsnn-v2 and of SPaiNN's recipe on every CH2NH2+ "
                "property, on 4 of 9 SO2 properties)")


#: the recipes `exsnn train --recipe NAME` knows; DEFAULT_RECIPE is used when none is named
RECIPES: dict[str, Recipe] = {
    "exsnn-v1": Recipe(
        "exsnn's defaults before issue #18: batch 16, AdamW 5e-4 with ReduceLROnPlateau (factor 0.5, patience 15), "
        "variance-normalised MSEs weighted 1/1/1, 500 epochs with early stopping after 50 epochs without improvement",
        batch_size=16, learning_rate=5e-4, schedule="plateau", max_epochs=500, max_steps=None, patience=50),
    "spainn": Recipe(
        "SPaiNN's tutorial recipe on exsnn's network and phase-free loss: batch 2, AdamW 1e-4, no schedule, MSEs on raw "
        "atomic-unit labels (Hartree, Hartree/Bohr, smooth NACs in Hartree/Bohr) weighted 1/1/1, 1000 epochs, no early "
        "stopping (the best validation epoch is kept)",
        batch_size=2, learning_rate=1e-4, schedule="none", max_epochs=1000, max_steps=None, patience=0, loss="raw"),
    "exsnn-v2": _EXSNN_V2,
    "exsnn-v3": _EXSNN_V3,
    "exsnn-v4": replace(
        _EXSNN_V3, weights={**_EXSNN_V3.weights, "forces": 6.0},
        description="exsnn-v3 with the forces weighted 6 instead of 4 (issue #18, 5-fold cross-validation with three "
                    "seeds per fold in benchmarks/bench_training_recipe.py: ahead of SPaiNN's recipe on every property of "
                    "CH2NH2+ and of SO2 LVC by more than the paired fold spread)"),
}
DEFAULT_RECIPE = "exsnn-v4"
SCHEDULES = ("plateau", "cosine", "none")
LOSS_MODES = ("normalised", "raw")


@dataclass(frozen=True)
class TrainingPlan:
    """What a run does once the training-set size is known (the recipe's "auto" values resolved)."""

    batch_size: int
    max_epochs: int | None
    max_steps: int | None
    steps_per_epoch: int
    total_steps: int  # the step budget the schedule spans
    warmup_steps: int


def _positive_int(value: Any, where: str, auto: bool = False) -> None:
    if auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        wanted = "a positive integer or 'auto'" if auto else "a positive integer"
        raise ConfigurationError(f"must be {wanted}, got {value!r}", where=where)


@dataclass
class TrainingConfig:
    """How to train (see `exsnn train --help` for each option). Fields left at None take the value of `recipe`; give
    only one of max_epochs/max_steps and the other budget is dropped (the run stops at the one given)."""

    data: str
    output: str
    network: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    recipe: str = DEFAULT_RECIPE
    batch_size: int | str | None = None
    learning_rate: float | None = None
    max_epochs: int | None = None
    max_steps: int | str | None = None
    schedule: str | None = None
    patience: int | None = None
    lr_patience: int | None = None
    lr_factor: float | None = None
    warmup: float | None = None
    final_lr_factor: float | None = None
    weight_decay: float | None = None
    loss: str | None = None
    checkpoint_metric: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    bootstrap: bool = False
    weights: dict[str, float] | None = None  # merged over the recipe's weights (give only the ones to change)
    double_precision: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    threads: int | None = None
    progress_bar: bool = True
    init_from: str | None = None  # a model.pt of the same architecture whose weights start the training (warm start)
    # labels of states more than this (eV) above the training set's lowest energy count less (`loss.EnergyWindow`;
    # one molecule; None: every label counts the same), fading over energy_cap_width_ev
    energy_cap_ev: float | None = None
    energy_cap_width_ev: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = ArchitectureConfig(**self.network)
        if not isinstance(self.recipe, str) or self.recipe not in RECIPES:
            raise ConfigurationError(f"unknown recipe {self.recipe!r}; expected one of {sorted(RECIPES)}", where="recipe")
        recipe = RECIPES[self.recipe]
        epochs_given, steps_given = self.max_epochs is not None, self.max_steps is not None
        if self.checkpoint_metric == "last" and self.patience is None:  # the final weights: the whole budget runs
            self.patience = 0
        for name in ("batch_size", "learning_rate", "schedule", "patience", "lr_patience", "lr_factor", "warmup",
                     "final_lr_factor", "weight_decay", "loss", "checkpoint_metric"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(recipe, name))
        if not epochs_given and not steps_given:  # given only one budget, the recipe's other one does not apply
            self.max_epochs, self.max_steps = recipe.max_epochs, recipe.max_steps
        weights = dict(recipe.weights)
        if self.weights is not None:
            if not isinstance(self.weights, dict):
                raise ConfigurationError(f"must be a table of loss weights, got {self.weights!r}", where="weights")
            unknown = set(self.weights) - set(weights)
            if unknown:
                raise ConfigurationError(f"unknown loss weight {sorted(unknown)[0]!r}; expected some of {sorted(weights)}",
                                         where="weights")
            weights.update(self.weights)
        self.weights = weights
        self._check()

    def _check(self) -> None:
        _positive_int(self.batch_size, "batch_size", auto=True)
        if self.max_epochs is not None:
            _positive_int(self.max_epochs, "max_epochs")
        if self.max_steps is not None:
            _positive_int(self.max_steps, "max_steps", auto=True)
        if self.max_epochs is None and self.max_steps is None:
            raise ConfigurationError("the run needs a budget: max_epochs or max_steps", where="max_epochs/max_steps")
        for name in ("patience", "lr_patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"must be a non-negative integer (epochs), got {value!r}", where=name)
        if self.schedule not in SCHEDULES:
            raise ConfigurationError(f"unknown schedule {self.schedule!r}; expected one of {list(SCHEDULES)}", where="schedule")
        if self.checkpoint_metric not in CHECKPOINT_METRICS:
            raise ConfigurationError(f"unknown checkpoint metric {self.checkpoint_metric!r}; expected one of "
                                     f"{list(CHECKPOINT_METRICS)}", where="checkpoint_metric")
        if self.checkpoint_metric == "last" and self.patience:
            raise ConfigurationError(f"checkpoint metric 'last' keeps the final weights, so the run cannot stop early; "
                                     f"give patience 0 or another metric, got patience {self.patience}", where="patience")
        if self.loss not in LOSS_MODES:
            raise ConfigurationError(f"unknown loss {self.loss!r}; expected one of {list(LOSS_MODES)}", where="loss")
        checks = {
            "learning_rate": (lambda x: x > 0, "> 0"),
            "lr_factor": (lambda x: 0 < x < 1, "between 0 and 1 (exclusive)"),
            "warmup": (lambda x: 0 <= x < 1, "a fraction of the step budget in [0, 1)"),
            "final_lr_factor": (lambda x: 0 < x <= 1, "in (0, 1]"),
            "weight_decay": (lambda x: x >= 0, ">= 0"),
        }
        for name, (ok, wanted) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or not ok(value):
                raise ConfigurationError(f"must be {wanted}, got {value!r}", where=name)
        for name, value in self.weights.items():  # type: ignore[union-attr]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ConfigurationError(f"must be a non-negative number, got {value!r}", where=f"weights.{name}")
        if not any(self.weights.values()):  # type: ignore[union-attr]
            raise ConfigurationError("at least one loss weight must be positive", where="weights")
        for name in ("energy_cap_ev", "energy_cap_width_ev"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ConfigurationError(f"must be a positive number of eV, got {value!r}", where=name)
        for term in ("diabatic_couplings", "seam_loops"):
            if self.weights.get(term, 0) and self.network.head != "diabatic":  # type: ignore[union-attr]
                raise ConfigurationError("the term acts on the diabatic head's Hamiltonian: it needs head = 'diabatic'",
                                         where=f"weights.{term}")

    def plan(self, n_train: int) -> TrainingPlan:
        """Resolve the "auto" values for `n_train` training frames."""
        batch = min(32, max(8, n_train // 5)) if self.batch_size == "auto" else int(self.batch_size)  # type: ignore[arg-type]
        batch = max(1, min(batch, n_train))
        per_epoch = -(-n_train // batch)
        steps = self.max_steps
        if steps == "auto":
            steps = min(200_000, max(20_000, 500 * per_epoch))
        total = min(x for x in (steps, None if self.max_epochs is None else self.max_epochs * per_epoch) if x is not None)
        return TrainingPlan(batch_size=batch, max_epochs=self.max_epochs, max_steps=steps, steps_per_epoch=per_epoch,  # type: ignore[arg-type]
                            total_steps=int(total), warmup_steps=int(round(self.warmup * total)))  # type: ignore[operator]

    @classmethod
    def build(cls, data: str, output: str, values: dict[str, Any] | None = None, source: str | None = None) -> TrainingConfig:
        """A config from plain values (a TOML table or command-line flags): training fields at the top level,
        architecture fields (`ArchitectureConfig`) either in a `network` table or at the top level. Unknown names and
        impossible values raise ConfigurationError naming `source` and the field."""
        values = dict(values or {})
        network = dict(values.pop("network", {}) or {})
        architecture = {f.name for f in fields(ArchitectureConfig)}
        training = {f.name for f in fields(cls)} - {"data", "output", "network"}
        for key in list(values):
            if key in architecture:
                network[key] = values.pop(key)
            elif key not in training:
                raise ConfigurationError(f"unknown training option; expected one of {sorted(training | architecture)}",
                                         source=source, where=key)
        unknown = set(network) - architecture
        if unknown:
            raise ConfigurationError(f"unknown network option; expected one of {sorted(architecture)}", source=source,
                                     where=f"network.{sorted(unknown)[0]}")
        try:
            return cls(data=data, output=output, network=ArchitectureConfig(**network), **values)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.problem, source=source, where=exc.where) from None

    @classmethod
    def from_file(cls, path: str | Path, data: str, output: str, **overrides: Any) -> TrainingConfig:
        """Read a TOML file of `build` values; `overrides` (command-line flags) win over it (loss weights one by one)."""
        import tomllib

        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read it as TOML ({exc})", source=str(path)) from None
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(values.get("weights"), dict) and isinstance(given.get("weights"), dict):
            given["weights"] = {**values["weights"], **given["weights"]}
        values.update(given)  # flat: they win over [network] too
        return cls.build(data, output, values, source=str(path))


def label_scales(path: str, indices: np.ndarray) -> tuple[LabelScales, list[float], float, float]:
    """Loss normalisation from the training frames: RMS sizes of the labels, per-state mean energy per atom,
    spread of the energy per atom, typical smooth-coupling size."""
    arrays = read_frames(path, indices)
    n_atoms = arrays.n_atoms
    has_e = arrays.masks[ENERGIES]
    per_atom = arrays.energies[has_e] / n_atoms[has_e][:, None]
    mean = per_atom.mean(0) if len(per_atom) else np.zeros(arrays.n_states)
    spread = float(per_atom.std()) if len(per_atom) > 1 else 1.0
    energy_scale = float(np.sqrt(((arrays.energies[has_e] - n_atoms[has_e][:, None] * mean) ** 2).mean())) if has_e.any() else 1.0
    atom_frame = np.repeat(np.arange(arrays.n_frames), n_atoms)

    def rms(values: np.ndarray) -> float:
        values = values[np.isfinite(values)]
        return float(np.sqrt((values**2).mean())) if values.size else 1.0

    forces = rms(arrays.forces[arrays.masks[FORCES][atom_frame]])
    smooth = 1.0
    if arrays.masks[NACS].any() and arrays.n_states > 1:
        pairs = np.array(state_pairs(arrays.n_states))
        gaps = arrays.energies[:, pairs[:, 1]] - arrays.energies[:, pairs[:, 0]]
        h = arrays.nacs * gaps[atom_frame][:, :, None]
        smooth = rms(h[(arrays.masks[NACS] & has_e)[atom_frame]])
    dipoles = rms(arrays.dipoles[arrays.masks[DIPOLES]])
    adjacent = np.diff(arrays.energies[has_e], axis=1)  # (F, N-1) gaps between neighbouring states
    gaps = rms(adjacent - adjacent.mean(0)) if adjacent.size else 1.0
    scales = LabelScales(energies=max(energy_scale, 1e-6), forces=max(forces, 1e-6), nacs=max(smooth, 1e-8),
                         dipoles=max(dipoles, 1e-8), gaps=max(gaps, 1e-6))
    return scales, [float(x) for x in mean], max(spread, 1e-6), max(smooth, 1e-8)


def training_elements(path: str) -> list[int]:
    """The atomic numbers that occur in a dataset (sorted)."""
    from exsnn.data.store import open_h5

    with open_h5(path) as handle:
        return sorted(int(z) for z in np.unique(handle["atoms/numbers"][:]))


def energy_window(config: TrainingConfig, indices: np.ndarray) -> EnergyWindow | None:
    """The run's energy window: its cap `energy_cap_ev` above the lowest reference energy of the training frames
    `indices` (None without a cap). DataError if the dataset holds more than one molecule (energies then do not
    compare) or the training frames have no energies."""
    if config.energy_cap_ev is None:
        return None
    training_molecule(config.data, "an energy cap (energy_cap_ev)")
    arrays = read_frames(config.data, indices)
    energies = arrays.energies[arrays.masks[ENERGIES]]
    if not energies.size:
        raise DataError(config.data, "energies", "an energy cap (energy_cap_ev) needs training frames with energies")
    return EnergyWindow(cap=float(energies.min()) + config.energy_cap_ev * EV_IN_HARTREE,
                        width=config.energy_cap_width_ev * EV_IN_HARTREE)


def training_molecule(path: str, needed_by: str = "indexed couplings") -> list[int]:
    """The atomic numbers of the dataset's molecule in atom order; every frame must hold the same list."""
    from exsnn.data.store import read_frames

    arrays = read_frames(path)
    offsets = arrays.atom_offsets
    first = arrays.numbers[offsets[0]:offsets[1]]
    for k in range(1, len(offsets) - 1):
        numbers = arrays.numbers[offsets[k]:offsets[k + 1]]
        if len(numbers) != len(first) or (numbers != first).any():
            raise DataError(path, f"frame {k}", f"{needed_by} needs one molecule with the same atom order in every "
                                                "frame; this frame differs from frame 0")
    return [int(z) for z in first]


def save_network(network: MultiStateNetwork, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the inference file: network configuration and weights (no Lightning needed to load it)."""
    torch.save({"format": "exsnn-model", "version": 1, "network": network.config.as_dict(),
                "state_dict": network.state_dict(), "double": next(network.parameters()).dtype == torch.float64,
                **(extra or {})}, path)


def read_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]]:
    """The path (a folder means its model.pt) and the stored dictionary of a model file written by `exsnn train`."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise DataError(path, "file", "does not exist")
    try:
        stored = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a truncated or foreign file fails inside pickle/zipfile in many ways
        raise DataError(path, "file", f"not a readable exsnn model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(stored, dict) or stored.get("format") != "exsnn-model":
        raise DataError(path, "format", "not an exsnn model file (written by `exsnn train`)")
    return path, stored


def load_network(path: str | Path, device: str | torch.device = "cpu") -> MultiStateNetwork:
    """A trained network from a model.pt written by `exsnn train`."""
    path, stored = read_model_file(path, device)
    try:
        network = MultiStateNetwork(NetworkConfig(**stored["network"]))
        if stored.get("double"):
            network = network.double()
        network.load_state_dict(stored["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise DataError(path, "network", f"damaged model file ({type(exc).__name__}: {exc})") from None
    return network.to(device).eval()


def plot_learning_curve(metrics_files: list[Path], png: Path) -> None:
    """Training and validation loss per epoch from Lightning CSV logs (all parts of a resumed run)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": []}
    for metrics_csv in metrics_files:
        with open(metrics_csv) as handle:
            for row in csv.DictReader(handle):
                for key in epochs:
                    if row.get(key):
                        epochs[key].append((int(row["epoch"]), float(row[key])))
    for key in epochs:
        epochs[key].sort()
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6, 4))
    styles = {"train_loss": ("training", "-", "o"), "val_loss": ("validation", "--", "s")}
    for key, points in epochs.items():
        if points:
            label, line, marker = styles[key]
            axis.semilogy(*zip(*points), line, marker=marker, markersize=3, label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss: weighted sum of MSEs")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_title("exsnn training: loss per epoch")
    axis.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def inherited_scales(model_file: str | Path) -> tuple[LabelScales, list[float], float, float]:
    """What a warm start keeps of the model it starts from, in `label_scales`' order: the loss scales it was trained
    with and its output statistics (per-state mean energy per atom, energy spread, coupling scale).

    Recomputing them from the grown training set would change the function the copied weights compute (E = mean +
    spread * output) and re-weight the loss terms: in an active-learning campaign a few labels far from the initial
    ensemble tripled the energy scale in one iteration, and warm-started members then diverged (issue #14)."""
    _, stored = read_model_file(model_file)
    state = stored.get("state_dict", {})
    if stored.get("scales") is None or not {"energy_mean", "energy_std", "coupling_scale"} <= set(state):
        raise ConfigurationError("stores no loss scales or output statistics (written by an older exsnn): train from "
                                 "scratch instead", source=str(model_file), where="init_from")
    return (LabelScales(**stored["scales"]), [float(x) for x in state["energy_mean"].tolist()], float(state["energy_std"]),
            float(state["coupling_scale"]))


def warm_start(network: MultiStateNetwork, model_file: str | Path) -> None:
    """Copy a saved model of the same architecture into `network`: trainable weights and output statistics (buffers),
    so that the warm-started network computes exactly the saved model's function before its first step."""
    state = load_network(model_file).state_dict()
    own = network.state_dict()
    wrong = [name for name, value in state.items() if name not in own or own[name].shape != value.shape]
    if wrong or len(state) != len(own):
        raise ConfigurationError("has another architecture than the network being trained", source=str(model_file),
                                 where="init_from")
    network.load_state_dict({name: value.to(own[name].dtype) for name, value in state.items()})


class StopAtStepBudget(pl.Callback):
    """Stop after `max_steps` optimiser steps through `Trainer.should_stop`, so that the last, possibly partial, epoch
    is still validated (and can become the best checkpoint); Lightning's own max_steps ends without validating."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.max_steps:
            trainer.should_stop = True


def check_training_inputs(config: TrainingConfig, resume: bool) -> None:
    """Everything that would stop a training run, checked before anything is written: the dataset is readable and has
    energies, the split leaves frames for training, validation and test, and a checkpoint to resume from holds the same
    architecture. Frames that the data check flags are reported as a warning (with how to filter them)."""
    from exsnn.data.check import CheckSettings, check_frames
    from exsnn.data.splits import split_indices

    arrays = read_frames(config.data)
    failed = {k for k, record in enumerate(arrays.provenance) if json.loads(record).get("failure")}
    if not arrays.masks[ENERGIES].any():
        raise DataError(config.data, "energies", "no frame has energies: the loss needs them (label the data first)")
    for label in (FORCES, NACS):
        if arrays.n_states > (1 if label == NACS else 0) and not arrays.masks[label].any():
            warnings.warn(f"{config.data}: no frame has {label}; the model learns them from nothing", ExsnnWarning, stacklevel=2)
    split_file = Path(config.output) / "split.npz"
    if split_file.exists():  # a split chosen by the caller (e.g. an active-learning campaign's held-out test set)
        from exsnn.data.splits import load_split

        split = load_split(split_file, arrays.n_frames)
    else:
        split = split_indices(arrays.n_frames, config.split, config.seed)
    sizes = {name: len(index) for name, index in split.items()}
    if min(sizes.values()) < 1:
        raise ConfigurationError(f"{arrays.n_frames} frames split {config.split} give train/val/test = "
                                 f"{sizes['train']}/{sizes['val']}/{sizes['test']}; each needs at least one frame "
                                 "(add frames or change --split)", source=config.data, where="split")
    if config.weights.get("seam_loops", 0):  # type: ignore[union-attr]
        from exsnn.data.seam_loops import read_seam_loops

        if not read_seam_loops(config.data):  # a malformed loop raises DataError here
            raise DataError(config.data, "seam loops", "the seam-loop term needs frames on a labelled loop (provenance "
                                                       "'seam_loop'); none are in this dataset")
    if config.network.indexed_couplings:
        try:
            check_coupling_symmetry(config.network.exchange, config.network.odd_couplings, training_molecule(config.data),
                                    arrays.n_states)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.problem, source=config.data, where=exc.where) from None
    used = set(np.concatenate([np.asarray(index) for index in split.values()]).tolist())  # a caller's split may leave some out
    problems = [p for p in check_frames(arrays, CheckSettings()) if p.frame not in failed and p.frame in used]
    if problems:
        kinds = sorted({p.kind for p in problems})
        warnings.warn(f"{config.data}: the data check flags {len({p.frame for p in problems})} frames "
                      f"({', '.join(kinds)}) that training will use; `exsnn data info {config.data}` lists them and "
                      f"`exsnn data filter {config.data} CLEAN.h5 --drop {','.join(kinds)}` writes a copy without them",
                      ExsnnWarning, stacklevel=2)
    last = Path(config.output) / "checkpoints" / "last.ckpt"
    if resume and last.exists():
        try:
            stored = torch.load(last, map_location="cpu", weights_only=False)["hyper_parameters"]["network"]
        except Exception as exc:  # a damaged checkpoint: the user decides (new folder or --restart)
            raise ConfigurationError(f"cannot read the checkpoint to resume from ({type(exc).__name__}); use a new "
                                     "output folder or --restart", source=config.output, where="checkpoints/last.ckpt") from None
        wanted = {**config.network.as_dict(), "n_states": arrays.n_states}
        differ = [f"{key} {stored.get(key)!r} there, {value!r} here" for key, value in wanted.items() if stored.get(key) != value]
        if differ:
            raise ConfigurationError(f"holds a checkpoint of another model ({'; '.join(differ)}); use a new output "
                                     "folder or --restart", source=config.output, where="checkpoints/last.ckpt")


def quiet_lightning() -> None:
    """Keep Lightning to what matters for an exsnn user: no banners (seed, accelerators), advertising tips or notes
    about its own deprecations; its warnings about the run itself still show. The CSV logger's note that "previous log
    files will be deleted" is wrong for exsnn: a resumed run first renames the previous metrics file (metrics_partK.csv)
    and the learning curve reads all parts."""
    import logging

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec.*")
    warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will be deleted.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")  # resuming


def build_task(config: TrainingConfig, datamodule: ExcitedStateDataModule) -> tuple[MultiStateTask, TrainingPlan, LabelScales]:
    """The Lightning task of a run (network, loss weights and scales, optimiser and schedule settings), the resolved
    plan, and the training set's label scales; sets the data module's batch size (and bootstrap sample)."""
    datamodule.setup()
    plan = config.plan(len(datamodule.split["train"]))
    datamodule.batch_size = plan.batch_size
    if config.bootstrap:
        rng = np.random.default_rng(config.seed)
        train_idx = datamodule.split["train"]
        datamodule.datasets["train"].indices = rng.choice(train_idx, size=len(train_idx), replace=True)
    if config.init_from:  # a warm start continues the previous model: its output statistics and loss scales
        scales, mean, spread, smooth = inherited_scales(config.init_from)
    else:
        scales, mean, spread, smooth = label_scales(config.data, datamodule.split["train"])
    n_states = datamodule.datasets["train"].arrays.n_states  # type: ignore[union-attr]
    window = energy_window(config, datamodule.split["train"])
    network = NetworkConfig(**config.network.as_dict(), n_states=n_states, energy_mean_per_atom=mean,
                            energy_std_per_atom=spread, coupling_scale=smooth, elements=training_elements(config.data),
                            molecule=training_molecule(config.data) if config.network.indexed_couplings else [])
    task = MultiStateTask(network.as_dict(), dict(config.weights), loss_scales(config.loss, scales).as_dict(),  # type: ignore[arg-type]
                          config.learning_rate, config.lr_factor, config.lr_patience, config.double_precision,  # type: ignore[arg-type]
                          schedule=config.schedule, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps,  # type: ignore[arg-type]
                          final_lr_factor=config.final_lr_factor, weight_decay=config.weight_decay,  # type: ignore[arg-type]
                          energy_window=asdict(window) if window is not None else None)
    if config.weights.get("seam_loops", 0):  # type: ignore[union-attr]
        from exsnn.data.seam_loops import read_seam_loops
        from exsnn.model.seam_loss import loop_batches

        task.seam_loops = loop_batches(datamodule.datasets["train"], read_seam_loops(config.data))
    return task, plan, scales


def train(config: TrainingConfig, resume: bool = True) -> dict[str, Any]:
    """Train one model into `config.output`; resume from its last checkpoint when there is one."""
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    check_training_inputs(config, resume)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dtype = torch.float64 if config.double_precision else torch.float32
    datamodule = ExcitedStateDataModule(
        config.data, batch_size=1, split_sizes=config.split, seed=config.seed, cutoff=config.network.cutoff,
        split_file=out / "split.npz", dtype=dtype,
    )
    task, plan, scales = build_task(config, datamodule)
    if config.init_from and not (resume and (out / "checkpoints" / "last.ckpt").exists()):
        warm_start(task.network, config.init_from)
    checkpoints = out / "checkpoints"
    monitor = CHECKPOINT_METRICS[config.checkpoint_metric] or "val_loss"  # type: ignore[index]  # "last": best.ckpt only reports
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor, save_top_k=1),
        # last.ckpt after every epoch, whatever the validation loss did (Lightning's save_last wrote it only together
        # with a new best, so a resumed run restarted from the best epoch and retrained the rest)
        ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                        enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if plan.max_steps is not None:
        callbacks.append(StopAtStepBudget(plan.max_steps))
    if config.patience:  # 0: no early stopping (the best validation epoch is still the model kept)
        callbacks.append(EarlyStopping(monitor=monitor, patience=config.patience))  # type: ignore[arg-type]
    csv_logger = CSVLogger(out, name="logs", version="")
    loggers: list[Any] = [csv_logger, TensorBoardLogger(out, name="tensorboard", version="")]
    trainer = pl.Trainer(
        max_epochs=-1 if plan.max_epochs is None else plan.max_epochs, max_steps=-1 if plan.max_steps is None else plan.max_steps,
        accelerator=config.accelerator, devices=config.devices, callbacks=callbacks,
        logger=loggers, inference_mode=False, enable_progress_bar=config.progress_bar, default_root_dir=out,
        log_every_n_steps=1, enable_model_summary=False,
    )
    last = checkpoints / "last.ckpt"
    logs = Path(csv_logger.log_dir)
    if resume and last.exists() and (logs / "metrics.csv").exists():  # keep the log of the interrupted part
        parts = len(list(logs.glob("metrics_part*.csv")))
        (logs / "metrics.csv").rename(logs / f"metrics_part{parts}.csv")
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if resume and last.exists() else None)
    best_path = str(last) if config.checkpoint_metric == "last" else callbacks[0].best_model_path or str(last)  # type: ignore[attr-defined]
    best = MultiStateTask.load_from_checkpoint(best_path, weights_only=False)
    trainer.test(best, datamodule=datamodule, verbose=False)
    table = best.test_table.summary()
    save_network(best.network, out / MODEL_FILE, {"scales": scales.as_dict(), "training": asdict(config), "test_errors": table})
    (out / "test_errors.json").write_text(json.dumps(table, indent=2))
    text = format_error_table(table)
    (out / "test_errors.txt").write_text(text + "\n")
    metrics = sorted(logs.glob("metrics_part*.csv")) + [p for p in [logs / "metrics.csv"] if p.exists()]
    if metrics:
        plot_learning_curve(metrics, out / "learning_curve.png")
    return {"output": str(out), "model": str(out / MODEL_FILE), "test_errors": table, "table_text": text,
            "split": {k: len(v) for k, v in datamodule.split.items()}, "epochs": trainer.current_epoch,
            "steps": trainer.global_step, "plan": asdict(plan)}


def train_committee(config: TrainingConfig, members: int, resume: bool = True) -> list[dict[str, Any]]:
    """Train `members` models with seeds seed, seed+1, ... into OUTPUT/member_k (bootstrap if configured)."""
    results = []
    for k in range(members):
        member = replace(config, output=str(Path(config.output) / f"member_{k}"), seed=config.seed + k)
        results.append(train(member, resume=resume))
    paths = [f"member_{k}/{MODEL_FILE}" for k in range(members)]  # relative to the committee folder: it can move
    (Path(config.output) / "committee.json").write_text(json.dumps({"members": paths}, indent=2))
    return results
