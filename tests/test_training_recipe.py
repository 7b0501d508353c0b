"""Named training recipes (issue #18): what each configures, step budgets, and refused values."""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import schnetpack.properties as structure
import torch

from exsnn.data import DatasetMetadata, append_frames
from exsnn.data.properties import state_pairs
from exsnn.data.torch_data import ExcitedStateDataModule
from exsnn.errors import ConfigurationError
from exsnn.model.loss import compute_loss
from exsnn.model.network import ArchitectureConfig
from exsnn.model.task import warmup_cosine
from exsnn.model.training import DEFAULT_RECIPE, RECIPES, TrainingConfig, build_task, train

TINY = ArchitectureConfig(n_atom_basis=8, n_interactions=1, n_rbf=6, cutoff=8.0)


@pytest.fixture(scope="module")
def lvc12(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 Wigner samples (2x the harmonic width) of the SO2 LVC model: exact energies, forces and NACs."""
    from exsnn.dynamics.initial_conditions import wigner_harmonic
    from exsnn.potentials.labelling import label_frames
    from exsnn.potentials.lvc import LVCPotential

    potential = LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    reference, masses, frequencies, modes = potential.harmonic_modes()
    positions, _ = wigner_harmonic(reference, masses, frequencies / 4.0, modes, 12, seed=7)
    path = tmp_path_factory.mktemp("lvc12") / "so2_lvc12.h5"
    append_frames(path, label_frames(potential, positions), DatasetMetadata(n_states=3, method="LVC"))
    return path


def task_for(config: TrainingConfig, tmp_path: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    datamodule = ExcitedStateDataModule(config.data, batch_size=1, split_sizes=config.split, seed=config.seed,
                                        cutoff=config.network.cutoff, split_file=tmp_path / "split.npz")
    task, plan, scales = build_task(config, datamodule)
    return task, plan, scales, datamodule


def test_spainn_recipe_adamw_1e4_batch_2_no_schedule_raw_units(lvc12: Path, tmp_path: Path) -> None:
    config = TrainingConfig(data=str(lvc12), output=str(tmp_path), network=TINY, recipe="spainn", split=(0.5, 0.25, 0.25))
    task, plan, scales, datamodule = task_for(config, tmp_path)
    assert plan.batch_size == 2 and datamodule.batch_size == 2
    assert plan.max_epochs == 1000 and plan.max_steps is None and config.patience == 0  # no early stopping
    configured = task.configure_optimizers()
    optimizer = configured["optimizer"]
    assert type(optimizer) is torch.optim.AdamW and "lr_scheduler" not in configured
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.01)
    # the loss: plain MSEs in atomic units, weights 1/1/1, couplings phase-free on the smooth NACs h = dE d
    assert (task.weights.energies, task.weights.forces, task.weights.nacs) == (1.0, 1.0, 1.0)
    assert (task.scales.energies, task.scales.forces, task.scales.nacs) == (1.0, 1.0, 1.0)
    assert scales.forces != 1.0  # the label scales exist; the raw loss does not divide by them
    batch = next(iter(datamodule.train_dataloader()))
    out = task.network(batch, forces="all")
    loss, _ = compute_loss(out, batch, task.weights, task.scales)
    out = {key: value.detach() for key, value in out.items()}
    energies = ((out["energies"] - batch["energies"]) ** 2).mean()
    forces = ((out["forces"] - batch["forces"]) ** 2).mean()
    pairs = torch.tensor(state_pairs(3))
    gaps = batch["energies"][:, pairs[:, 1]] - batch["energies"][:, pairs[:, 0]]
    idx_m = batch[structure.idx_m]
    smooth = batch["nacs"] * gaps[idx_m][:, :, None]
    couplings = 0.0
    for b in range(2):  # best consistent state-sign vector per structure, by brute force
        atoms = idx_m == b
        errors = []
        for s1 in (1, -1):
            for s2 in (1, -1):
                signs = torch.tensor([s1, s2, s1 * s2], dtype=smooth.dtype)[None, :, None]
                errors.append(((out["smooth_nacs"][atoms] - signs * smooth[atoms]) ** 2).sum())
        couplings = couplings + min(errors)
    couplings = couplings / smooth.numel()
    torch.testing.assert_close(loss.detach(), (energies + forces + couplings).to(loss.dtype), rtol=1e-5, atol=0.0)


def test_legacy_and_default_recipes(lvc12: Path, tmp_path: Path) -> None:
    legacy = TrainingConfig(data=str(lvc12), output=str(tmp_path / "a"), network=TINY, recipe="exsnn-v1")
    assert (legacy.batch_size, legacy.learning_rate, legacy.max_epochs, legacy.patience, legacy.loss) == (16, 5e-4, 500, 50, "normalised")
    task, *_ = task_for(legacy, tmp_path / "a")
    configured = task.configure_optimizers()
    assert isinstance(configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert task.scales.forces != 1.0  # variance-normalised
    default = TrainingConfig(data=str(lvc12), output=str(tmp_path / "b"), network=TINY)
    assert default.recipe == DEFAULT_RECIPE and default.schedule == "cosine" and default.max_steps == "auto"
    task, plan, *_ = task_for(default, tmp_path / "b")
    assert plan.batch_size == 8 and plan.max_steps == 20_000 and plan.total_steps == 20_000  # 9 training frames
    configured = task.configure_optimizers()
    assert configured["lr_scheduler"]["interval"] == "step"
    assert task.weights.forces == RECIPES[DEFAULT_RECIPE].weights["forces"]
    factor = warmup_cosine(100, 10, 0.01)
    assert factor(0) == pytest.approx(1 / 11) and factor(10) == pytest.approx(1.0) and factor(100) == pytest.approx(0.01)
    assert TrainingConfig(data="-", output="-", recipe="exsnn-v2").plan(1000).batch_size == 32
    # issue #18's cross-validation: exsnn-v3 is exsnn-v2 with the peak learning rate doubled, the default exsnn-v4 is
    # exsnn-v3 with the forces weighted 6, nothing else
    v2, v3, v4 = RECIPES["exsnn-v2"], RECIPES["exsnn-v3"], RECIPES["exsnn-v4"]
    assert replace(v2, description=v3.description, learning_rate=1e-3) == v3
    assert DEFAULT_RECIPE == "exsnn-v4" and replace(v3, description=v4.description, weights={**v3.weights, "forces": 6.0}) == v4
    assert v4.weights["forces"] == 6.0 and v3.weights["forces"] == 4.0


def test_explicit_values_win_and_one_budget_replaces_the_other() -> None:
    config = TrainingConfig(data="-", output="-", recipe="spainn", learning_rate=3e-4, weights={"forces": 5.0})
    assert config.learning_rate == 3e-4 and config.batch_size == 2
    assert config.weights == {"energies": 1.0, "forces": 5.0, "nacs": 1.0, "dipoles": 1.0, "gaps": 0.0, "small_gaps": 0.0,
                              "diabatic_couplings": 0.0, "seam_loops": 0.0}
    for term in ("diabatic_couplings", "seam_loops"):  # the terms need the diabatic head's Hamiltonian
        with pytest.raises(ConfigurationError, match=f"weights.{term}.*diabatic"):
            TrainingConfig(data="-", output="-", weights={term: 0.1})
    assert TrainingConfig(data="-", output="-", weights={"diabatic_couplings": 0.1},
                          network={"head": "diabatic"}).weights["diabatic_couplings"] == 0.1
    steps = TrainingConfig(data="-", output="-", recipe="spainn", max_steps=300)
    assert steps.max_steps == 300 and steps.max_epochs is None
    epochs = TrainingConfig(data="-", output="-", max_epochs=3)  # the default recipe's step budget is dropped
    assert epochs.max_epochs == 3 and epochs.max_steps is None
    plan = epochs.plan(40)
    assert plan.batch_size == 8 and plan.total_steps == 3 * 5  # the cosine schedule spans the 3 epochs given


def test_toml_recipe_and_weights_merge(tmp_path: Path) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text('recipe = "spainn"\nmax_steps = 50\n[weights]\nforces = 2.0\nnacs = 0.5\n')
    config = TrainingConfig.from_file(toml, data="-", output="-", weights={"forces": 3.0})
    assert config.recipe == "spainn" and config.max_steps == 50 and config.weights["forces"] == 3.0 and config.weights["nacs"] == 0.5


@pytest.mark.parametrize(("values", "where"), [
    ({"recipe": "spaynn"}, "recipe"), ({"recipe": None}, "recipe"), ({"schedule": "linear"}, "schedule"),
    ({"loss": "huber"}, "loss"), ({"batch_size": "big"}, "batch_size"), ({"max_steps": 0}, "max_steps"),
    ({"max_steps": 2.5}, "max_steps"), ({"weights": {"force": 1.0}}, "weights"), ({"weights": {"forces": -1.0}}, "weights.forces"),
    ({"weights": {"energies": 0, "forces": 0, "nacs": 0, "dipoles": 0}}, "weights"), ({"warmup": 1.0}, "warmup"),
    ({"final_lr_factor": 0.0}, "final_lr_factor"), ({"patience": -1}, "patience"), ({"learning_rate": float("nan")}, "learning_rate"),
    ({"energy_cap_ev": -1.0}, "energy_cap_ev"), ({"energy_cap_width_ev": 0.0}, "energy_cap_width_ev"),
    ({"energy_cap_ev": "high"}, "energy_cap_ev"),
])
def test_impossible_values_are_configuration_errors(values: dict, where: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        TrainingConfig.build("-", "-", values, source="train.toml")
    assert error.value.where == where and error.value.source == "train.toml"
    if where == "recipe":
        assert "spainn" in error.value.problem and "exsnn-v1" in error.value.problem  # the known names are listed


def test_cli_names_the_flag(tmp_path: Path) -> None:
    for flags, fragments in ((["--recipe", "nope"], ["--recipe", "unknown recipe 'nope'", "exsnn-v2"]),
                             (["--force-weight", "-2"], ["--force-weight", "non-negative"]),
                             (["--energy-cap-ev", "0"], ["--energy-cap-ev", "positive number of eV"])):
        result = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "train", "missing.h5", "-o", tmp_path / "out", *flags],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, result.stderr
        assert not (tmp_path / "out").exists()


def test_max_steps_stops_there_and_validates_the_last_partial_epoch(lvc12: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainingConfig(data=str(lvc12), output=str(out), network=TINY, recipe="exsnn-v2", max_steps=7, batch_size=2,
                            split=(0.5, 0.25, 0.25), threads=1, progress_bar=False, accelerator="cpu")
    result = train(config, resume=False)
    assert result["steps"] == 7 and result["plan"]["steps_per_epoch"] == 3  # 6 training frames, batch 2: 2 epochs + 1 step
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 7
    lr = last["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(5e-4 * warmup_cosine(7, 0, 0.01)(7))  # the cosine schedule ran per step to its end
    with open(out / "logs" / "metrics.csv") as handle:
        validated = [int(row["step"]) for row in csv.DictReader(handle) if row.get("val_loss")]
    assert validated == [2, 5, 6]  # every epoch, the partial last one too (step is 0-based)
    assert np.isfinite(result["test_errors"]["forces"]["mae"]["S0"])
