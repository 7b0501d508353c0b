"""Error table of a trained model on any exsnn dataset (all frames, or the frames of a split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exsnn.data.torch_data import ExcitedStateTorchDataset, batch_loader
from exsnn.errors import DataError
from exsnn.model.loss import ErrorTable
from exsnn.model.training import load_network


def evaluate(model_file: str | Path, data: str | Path, indices: np.ndarray | None = None, batch_size: int = 32) -> dict[str, Any]:
    """MAE/RMSE per property and state of the model at `model_file` on `data` (see ErrorTable.summary)."""
    network = load_network(model_file)
    dtype = next(network.parameters()).dtype
    dataset = ExcitedStateTorchDataset(data, cutoff=network.config.cutoff, indices=indices, dtype=dtype)
    if dataset.arrays is not None and dataset.arrays.n_states != network.n_states:
        raise DataError(data, "states", f"{dataset.arrays.n_states} states, but the model predicts {network.n_states}")
    table = ErrorTable(network.n_states)
    for batch in batch_loader(dataset, batch_size, shuffle=False):
        out = network(batch, forces="all")
        table.update({k: v.detach() for k, v in out.items()}, batch)
    return table.summary()
