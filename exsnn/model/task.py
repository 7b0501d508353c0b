"""The Lightning module that trains a MultiStateNetwork: loss, optimiser, schedule, validation and test metrics."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from exsnn.model.loss import ErrorTable, LabelScales, LossWeights, compute_loss
from exsnn.model.network import MultiStateNetwork, NetworkConfig


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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = MultiStateNetwork(NetworkConfig(**network))
        if double_precision:
            self.network = self.network.double()
        self.weights = LossWeights(**weights)
        self.scales = LabelScales(**scales)
        self.test_table = ErrorTable(self.network.n_states)

    def forward(self, batch: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.network(batch, **kwargs)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        with torch.enable_grad():
            out = self.network(batch, forces="all", create_graph=stage == "train")
            loss, parts = compute_loss(out, batch, self.weights, self.scales)
        size = int(batch["_n_atoms"].shape[0])
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test", batch_size=size, on_epoch=True, on_step=False)
        for name, value in parts.items():
            self.log(f"{stage}_{name}", value, batch_size=size, on_epoch=True, on_step=False)
        if stage == "test":
            self.test_table.update({k: v.detach() for k, v in out.items()}, batch)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def on_test_start(self) -> None:
        self.test_table = ErrorTable(self.network.n_states)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=self.hparams.lr_factor, patience=self.hparams.lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}
