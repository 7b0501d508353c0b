"""Label again the frames of a campaign whose oracle calculation failed, with the oracle as it is now.

A failed label stays in `data.h5` as a frame with positions and no labels (its provenance says it failed), so the
campaign neither trains on it nor selects it again. When the oracle's code improves (for SA-CASSCF: more starts, a
second-order solver for stalled runs), those geometries (often the most distorted ones the dynamics reached, where
the committee most needs labels) can be labelled after all: `exsnn campaign retry-failed DIR`.

Each retried frame keeps its place in the file and its campaign tag (iteration, split, trajectory), so the training and
test sets stay what they were, and gains `"retried"` in its provenance (when, and whether it failed again). The file is
rewritten atomically after every `[oracle] batch` of labels: a kill loses at most one batch of work and never the
file. It holds the campaign's lock: it refuses to run beside a running campaign (and the campaign beside it). Committees
trained before use the labels they were trained on; the next training uses the new ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from exsnn.active.campaign import load_oracle, open_campaign
from exsnn.active.label import failed_frames, oracle_frames
from exsnn.active.layout import campaign_lock
from exsnn.data import Frame, append_frames, read_frames
from exsnn.data.store import read_metadata
from exsnn.potentials.base import Potential


def rewrite_frames(path: Path, frames: list[Frame]) -> None:
    """Replace the dataset at `path` by `frames` (same metadata) atomically: written to a temporary file beside it, then
    renamed over it."""
    temporary = path.with_name(f".{path.name}.rewrite-{os.getpid()}")
    try:
        append_frames(temporary, frames, read_metadata(path))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def retry_failed(root: str | Path, progress: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Label every failed frame of the campaign at `root` again with its oracle; returns (retried, now labelled)."""
    say = progress or (lambda message: None)
    directory, config = open_campaign(root)
    with campaign_lock(directory.root):
        todo = failed_frames(directory.data)
        if not todo:
            say("no failed labels to retry")
            return 0, 0
        oracle = load_oracle(config)
        frames = read_frames(directory.data).frames()
        say(f"retrying {len(todo)} failed labels with {oracle.describe()}")
        try:
            recovered = _relabel(directory.data, frames, todo, oracle, config.oracle.batch, say)
        finally:
            close = getattr(oracle, "close", None)  # a pyscf: oracle's worker processes
            if close is not None:
                close()
    return len(todo), recovered


def _relabel(data: Path, frames: list[Frame], todo: list[int], oracle: Potential, batch: int, say: Callable[[str], None]) -> int:
    """Label frames[todo] with the oracle, `batch` at a time, rewriting `data` after each batch; how many succeeded."""
    recovered = 0
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        positions = torch.as_tensor(np.stack([frames[k].positions for k in chunk]))
        for k, new in zip(chunk, oracle_frames(oracle, positions, [frames[k].provenance["campaign"] for k in chunk])):
            old = frames[k].provenance
            labelled = new.energies is not None
            new.provenance = {**old, **{key: value for key, value in new.provenance.items() if key != "campaign"},
                              "retried": {"at": stamp, "labelled": labelled}}
            if labelled:
                new.provenance.pop("failure", None)
            frames[k] = new
            recovered += labelled
        rewrite_frames(data, frames)
        say(f"{min(start + len(chunk), len(todo))} of {len(todo)} retried, {recovered} labelled")
    return recovered
