"""Training runs and committees: data, Lightning trainer (checkpoints, resume, early stopping, LR schedule, CSV and
TensorBoard logs), learning-curve plot, test error table, and the saved model file used for inference."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from exsnn.data.properties import DIPOLES, ENERGIES, FORCES, NACS, state_pairs
from exsnn.data.store import read_frames
from exsnn.data.torch_data import ExcitedStateDataModule
from exsnn.model.loss import LabelScales, LossWeights, format_error_table
from exsnn.errors import ConfigurationError, DataError
from exsnn.model.network import ArchitectureConfig, MultiStateNetwork, NetworkConfig
from exsnn.model.task import MultiStateTask

MODEL_FILE = "model.pt"


@dataclass
class TrainingConfig:
    """How to train (see `exsnn train --help` for each option)."""

    data: str
    output: str
    network: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    batch_size: int = 16
    learning_rate: float = 5e-4
    max_epochs: int = 500
    patience: int = 50
    lr_patience: int = 15
    lr_factor: float = 0.5
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    bootstrap: bool = False
    weights: dict[str, float] = field(default_factory=lambda: asdict(LossWeights()))
    double_precision: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    threads: int | None = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.network, dict):
            self.network = ArchitectureConfig(**self.network)

    @classmethod
    def build(cls, data: str, output: str, values: dict[str, Any] | None = None, source: str | None = None) -> "TrainingConfig":
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
    def from_file(cls, path: str | Path, data: str, output: str, **overrides: Any) -> "TrainingConfig":
        """Read a TOML file of `build` values; `overrides` (command-line flags) win over it."""
        import tomllib

        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read it as TOML ({exc})", source=str(path)) from None
        values.update({k: v for k, v in overrides.items() if v is not None})  # flat: they win over [network] too
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
    scales = LabelScales(energies=max(energy_scale, 1e-6), forces=max(forces, 1e-6), nacs=max(smooth, 1e-8), dipoles=max(dipoles, 1e-8))
    return scales, [float(x) for x in mean], max(spread, 1e-6), max(smooth, 1e-8)


def training_elements(path: str) -> list[int]:
    """The atomic numbers that occur in a dataset (sorted)."""
    from exsnn.data.store import open_h5

    with open_h5(path) as handle:
        return sorted(int(z) for z in np.unique(handle["atoms/numbers"][:]))


def save_network(network: MultiStateNetwork, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the inference file: network configuration and weights (no Lightning needed to load it)."""
    torch.save({"format": "exsnn-model", "version": 1, "network": network.config.as_dict(),
                "state_dict": network.state_dict(), "double": next(network.parameters()).dtype == torch.float64,
                **(extra or {})}, path)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> MultiStateNetwork:
    """A trained network from a model.pt written by `exsnn train`."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    stored = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(stored, dict) or stored.get("format") != "exsnn-model":
        raise DataError(path, "file", "not an exsnn model file")
    network = MultiStateNetwork(NetworkConfig(**stored["network"]))
    if stored.get("double"):
        network = network.double()
    network.load_state_dict(stored["state_dict"])
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
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, points in epochs.items():
        if points:
            axis.semilogy(*zip(*points), label=key.replace("_", " "))
    axis.set_xlabel("epoch")
    axis.set_ylabel("normalised loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def train(config: TrainingConfig, resume: bool = True) -> dict[str, Any]:
    """Train one model into `config.output`; resume from its last checkpoint when there is one."""
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, workers=True)
    dtype = torch.float64 if config.double_precision else torch.float32
    datamodule = ExcitedStateDataModule(
        config.data, batch_size=config.batch_size, split_sizes=config.split, seed=config.seed, cutoff=config.network.cutoff,
        split_file=out / "split.npz", dtype=dtype,
    )
    datamodule.setup()
    if config.bootstrap:
        rng = np.random.default_rng(config.seed)
        train_idx = datamodule.split["train"]
        datamodule.datasets["train"].indices = rng.choice(train_idx, size=len(train_idx), replace=True)
    scales, mean, spread, smooth = label_scales(config.data, datamodule.split["train"])
    n_states = datamodule.datasets["train"].arrays.n_states  # type: ignore[union-attr]
    network = NetworkConfig(**config.network.as_dict(), n_states=n_states, energy_mean_per_atom=mean,
                            energy_std_per_atom=spread, coupling_scale=smooth, elements=training_elements(config.data))
    task = MultiStateTask(network.as_dict(), dict(config.weights), scales.as_dict(), config.learning_rate,
                          config.lr_factor, config.lr_patience, config.double_precision)
    checkpoints = out / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val_loss", save_last=True, save_top_k=1),
        EarlyStopping(monitor="val_loss", patience=config.patience),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    csv_logger = CSVLogger(out, name="logs", version="")
    loggers: list[Any] = [csv_logger, TensorBoardLogger(out, name="tensorboard", version="")]
    trainer = pl.Trainer(
        max_epochs=config.max_epochs, accelerator=config.accelerator, devices=config.devices, callbacks=callbacks,
        logger=loggers, inference_mode=False, enable_progress_bar=config.progress_bar, default_root_dir=out,
        log_every_n_steps=1, enable_model_summary=False,
    )
    last = checkpoints / "last.ckpt"
    logs = Path(csv_logger.log_dir)
    if resume and last.exists() and (logs / "metrics.csv").exists():  # keep the log of the interrupted part
        parts = len(list(logs.glob("metrics_part*.csv")))
        (logs / "metrics.csv").rename(logs / f"metrics_part{parts}.csv")
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(last) if resume and last.exists() else None)
    best_path = callbacks[0].best_model_path or str(last)  # type: ignore[attr-defined]
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
            "split": {k: len(v) for k, v in datamodule.split.items()}, "epochs": trainer.current_epoch}


def train_committee(config: TrainingConfig, members: int, resume: bool = True) -> list[dict[str, Any]]:
    """Train `members` models with seeds seed, seed+1, ... into OUTPUT/member_k (bootstrap if configured)."""
    results = []
    for k in range(members):
        member = replace(config, output=str(Path(config.output) / f"member_{k}"), seed=config.seed + k)
        results.append(train(member, resume=resume))
    paths = [f"member_{k}/{MODEL_FILE}" for k in range(members)]  # relative to the committee folder: it can move
    (Path(config.output) / "committee.json").write_text(json.dumps({"members": paths}, indent=2))
    return results
