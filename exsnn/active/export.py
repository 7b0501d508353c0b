"""Take a campaign's committee out for production: `exsnn campaign export DIR -o FOLDER [--iteration N]`.

The export is a committee folder (loadable as `model:FOLDER`) with only what running it needs, each member's
`model.pt` and `test_errors.txt`, plus `committee.json` and `ORIGIN.json` (the campaign, the iteration, the labels the
committee was trained on and its test errors on the campaign's held-out frames). By default the newest committee
the campaign has finished training is exported, so a campaign still in progress can ship an interim model.

The folder is written under a temporary name and renamed when complete; an existing folder is replaced only when it
is itself an export (it holds ORIGIN.json) or empty, so a mistyped `-o` never deletes unrelated files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from exsnn.active.campaign import open_campaign
from exsnn.active.train import committee_folder
from exsnn.data.splits import load_split
from exsnn.errors import ConfigurationError
from exsnn.model.training import MODEL_FILE

ORIGIN_FILE = "ORIGIN.json"
MEMBER_FILES = (MODEL_FILE, "test_errors.txt")


def trained_iterations(root: Path, n_members: int) -> list[int]:
    """Iterations of the campaign at `root` whose committee is completely trained, ascending."""
    done = []
    for folder in sorted(root.glob("iteration_[0-9][0-9][0-9]")):
        committee = committee_folder(folder)
        if (committee / "committee.json").exists() and all(
                (committee / f"member_{k}" / MODEL_FILE).exists() for k in range(n_members)):
            done.append(int(folder.name.split("_")[1]))
    return done


def _origin(root: Path, iteration: int, committee: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    split = load_split(committee / "member_0" / "split.npz")
    n_trained = int(len(split["train"]) + len(split["val"]))
    entry = next((h for h in history if h.get("iteration") == iteration), {})
    origin = {"campaign": str(root), "iteration": iteration, "n_labels": n_trained + int(len(split["test"])),
              "n_trained_on": n_trained, "n_test": int(len(split["test"]))}
    note = f"committee of campaign iteration {iteration}, trained on {n_trained} labels (training and validation)"
    if entry.get("test_errors"):  # the iteration's report: its test set includes the labels of that iteration
        origin["test_errors"] = entry["test_errors"]
        origin["n_test_of_errors"] = int(entry.get("n_test", len(split["test"])))
        note += f"; test errors of the iteration's report, on {origin['n_test_of_errors']} held-out frames"
    return {**origin, "note": note}


def export_committee(root: str | Path, output: str | Path, iteration: int | None = None) -> dict[str, Any]:
    """Copy a trained committee of the campaign at `root` into `output`; return what ORIGIN.json says.
    iteration: which one (default: the newest fully trained)."""
    directory, config = open_campaign(root)
    root = directory.root
    done = trained_iterations(root, config.committee.members)
    if not done:
        raise ConfigurationError("no iteration has a fully trained committee yet", source=str(root))
    if iteration is None:
        iteration = done[-1]
    elif iteration not in done:
        raise ConfigurationError(f"iteration {iteration} has no fully trained committee; trained: {done}",
                                 source="--iteration")
    output = Path(output)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / ORIGIN_FILE).exists())):
        raise ConfigurationError("exists and is not an earlier export (no ORIGIN.json): refusing to replace it",
                                 source=str(output))
    committee = committee_folder(directory.iteration(iteration))
    origin = _origin(root, iteration, committee, directory.read_state().history)
    staging = output.with_name(f".{output.name}.export.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for k in range(config.committee.members):
        (staging / f"member_{k}").mkdir()
        for name in MEMBER_FILES:
            if (committee / f"member_{k}" / name).exists():
                shutil.copy2(committee / f"member_{k}" / name, staging / f"member_{k}" / name)
    shutil.copy2(committee / "committee.json", staging / "committee.json")
    (staging / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return origin
