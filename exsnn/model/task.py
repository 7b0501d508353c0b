"""The Lightning module that trains a MultiStateNetwork: loss, optimiser, schedule, validation and test metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from exsnn.model.loss import EnergyWindow, ErrorTable, LabelScales, LossWeights, compute_loss
from exsnn.model.network import MultiStateNetwork, NetworkConfig
from exsnn.model.seam_loss import LoopBatch, seam_loop_loss


class MultiStateTask(pl.LightningModule):
    """Trains on batches from `exsnn.data.torch_data` (forces of all states by autograd, phase-free couplings)."""

    def __init__(
        self,
        network: dict[str, Any],
        weights: dict[str, float],
        scales: dict[str, float],
        learning_rate: float = 5e-4,
        lr_factor: float = 0.5,
        lr_patience: int = 10,
        double_precision: bool = False,
        schedule: str = "plateau",
        total_steps: int | None = None,
        warmup_steps: int = 0,
        final_lr_factor: float = 0.01,
        weight_decay: float = 0.01,
        energy_window: dict[str, float] | None = None,
    ) -> None:
        """`scales` divide the errors of each label (all ones: raw atomic-unit MSEs); `schedule` is "plateau"
        (ReduceLROnPlateau on val_loss, checked every epoch), "cosine" (linear warm-up over `warmup_steps`, then cosine
        decay to learning_rate * final_lr_factor at `total_steps`, updated every optimiser step) or "none"."""
        super().__init__()
        self.save_hyperparameters()
        self.network = MultiStateNetwork(NetworkConfig(**network))
        if double_precision:
            self.network = self.network.double()
        self.weights = LossWeights(**weights)
        self.scales = LabelScales(**scales)
        self.window = EnergyWindow(**energy_window) if energy_window else None
        self.test_table = ErrorTable(self.network.n_states)
        self.seam_loops: list[LoopBatch] = []  # labelled seam loops for the seam-loop term (set by the training run)

    def forward(self, batch: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.network(batch, **kwargs)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        with torch.enable_grad():
            out = self.network(batch, forces="all", create_graph=stage == "train")
            loss, parts = compute_loss(out, batch, self.weights, self.scales, self.window)
            if stage == "train" and self.seam_loops and self.weights.seam_loops > 0:
                parts["seam_loops"] = self._seam_loop_term()
                loss = loss + self.weights.seam_loops * parts["seam_loops"]
        size = int(batch["_n_atoms"].shape[0])
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test", batch_size=size, on_epoch=True, on_step=False)
        for name, value in parts.items():
            self.log(f"{stage}_{name}", value, batch_size=size, on_epoch=True, on_step=False)
        # the part of the loss the dynamics runs on (a checkpoint metric, `Recipe.checkpoint_metric`)
        dynamics = self.weights.energies * parts["energies"] + self.weights.forces * parts.get("forces", 0.0 * loss)
        self.log(f"{stage}_energies_forces", dynamics, batch_size=size, on_epoch=True, on_step=False)
        if stage == "test":
            self.test_table.update({k: v.detach() for k, v in out.items()}, batch)
        return loss

    def _seam_loop_term(self) -> torch.Tensor:
        """Mean of the seam-loop term over the labelled loops (`exsnn.model.seam_loss`)."""
        dtype = next(self.network.parameters()).dtype
        terms = []
        for loop in self.seam_loops:
            moved = loop.to(self.device, dtype)
            vectors = self.network.predict(moved.batch)["state_vectors"]
            terms.append(seam_loop_loss(vectors, moved.pair, moved.target))
        return torch.stack(terms).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def on_test_start(self) -> None:
        self.test_table = ErrorTable(self.network.n_states)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        schedule = hp.get("schedule", "plateau")  # checkpoints written before schedules were selectable: plateau
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.learning_rate, weight_decay=hp.get("weight_decay", 0.01))
        if schedule == "none":
            return {"optimizer": optimizer}
        if schedule == "cosine":
            if not hp.get("total_steps"):
                raise ValueError("the cosine schedule needs total_steps")
            factor = warmup_cosine(int(hp.total_steps), int(hp.get("warmup_steps", 0)), float(hp.get("final_lr_factor", 0.01)))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if schedule != "plateau":
            raise ValueError(f"unknown schedule {schedule!r}")
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=hp.lr_factor, patience=hp.lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def warmup_cosine(total_steps: int, warmup_steps: int, final_factor: float) -> Callable[[int], float]:
    """Learning-rate factor after `step` optimiser steps: linear from 1/(warmup+1) to 1 over the warm-up, then a cosine
    from 1 to `final_factor` at `total_steps` (and `final_factor` after it). A plain function, so a resumed run with
    another budget follows the new one (LambdaLR stores only callable objects in its state)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
