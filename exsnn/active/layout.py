"""A campaign is a directory:

```
campaign.toml          the input, copied at the start (resume reads this copy)
data.h5                every label: initial Wigner set + labels from dynamics (exsnn dataset, provenance per frame)
state.json             iteration, phase, labels spent, stopping rule, time per phase (replaced atomically)
.lock                  held (flock) by the one process working on the campaign: run, resume, retry-failed
iteration_NNN/
    committee/member_K/   the trained members (model.pt, logs, learning curve, split.npz)
    thresholds.json       the disagreement thresholds used by the dynamics of this iteration
    dynamics.npz          per step and trajectory: positions, active state, disagreement, gaps, status (working
                          data: a folder without it runs the iteration's ensemble again when a phase needs it)
    populations.npz       its populations part (active states, status, members' populations): what the stopping
                          rule and the next report need; the file to keep when a campaign folder is shipped
    selection.npz         the geometries chosen for labelling and why
    report.md, *.png      the iteration report
```

Every phase writes its result to a temporary name and renames it when complete, so a phase whose output exists is
done and is never rerun.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE = "campaign.toml"
DATA_FILE = "data.h5"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"

#: phases of one iteration, in order
PHASES = ("train", "simulate", "decide", "select", "label", "report")


@dataclass
class CampaignState:
    """What state.json holds."""

    iteration: int = 0
    phase: str = "initial"
    n_labels: int = 0
    stopped: str | None = None  # the rule that stopped the campaign ("converged", "label budget", "iteration limit")
    converged: bool = False
    phase_seconds: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CampaignDirectory:
    """Paths of a campaign directory and atomic access to its state."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def data(self) -> Path:
        return self.root / DATA_FILE

    def iteration(self, k: int) -> Path:
        return self.root / f"iteration_{k:03d}"

    def read_state(self) -> CampaignState:
        path = self.root / STATE_FILE
        if not path.exists():
            return CampaignState()
        return CampaignState(**json.loads(path.read_text()))

    def write_state(self, state: CampaignState) -> None:
        write_atomic_text(self.root / STATE_FILE, json.dumps(state.as_dict(), indent=2))


def write_atomic_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename (readers never see half a file)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    with open(temporary) as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_npz_atomic(path: Path, compressed: bool = False, **arrays: Any) -> None:
    """np.savez (np.savez_compressed) through a temporary file and a rename."""
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    (np.savez_compressed if compressed else np.savez)(temporary, **arrays)
    os.replace(temporary, path)


@contextmanager
def campaign_lock(root: str | Path) -> Iterator[None]:
    """Hold the campaign directory's lock while working on it: an exclusive flock on ROOT/.lock, which the operating
    system releases when the holder exits however it ends (SIGKILL included). Raises ConfigurationError, naming the
    holder's process id, when another process holds it."""
    from exsnn.errors import ConfigurationError

    path = Path(root) / LOCK_FILE
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigurationError(f"is in use by another exsnn process (pid {holder}); wait for it to end, or stop "
                                     "it (a killed campaign resumes where it stopped)", source=str(root)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock
