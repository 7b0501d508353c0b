"""Take a campaign's committee out for production: `exsnn campaign export DIR -o FOLDER [--iteration N]`.

The export is a committee folder (loadable as `model:FOLDER`) with only what running it needs, each member's
`model.pt` and `test_errors.txt`, plus `committee.json` and `ORIGIN.json` (the campaign, the iteration, the labels the
committee was trained on and its test errors on the campaign's held-out frames). ORIGIN.json's "run_as" says how the
campaign ran the committee's dynamics: the initial state, the driver, the time step, the end in S0 and the oracle,
and the harmonic modes file of its Wigner sampling (copied beside it as `modes.json`), so `exsnn demo --model FOLDER`
runs it the same way (`run_as`). By default the newest committee the campaign has finished training is exported, so a
campaign still in progress can ship an interim model.

The folder is written under a temporary name and renamed when complete; an existing folder is replaced only when it
is itself an export (it holds ORIGIN.json) or empty, so a mistyped `-o` never deletes unrelated files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from exsnn.active.campaign import open_campaign
from exsnn.active.config import CampaignConfig
from exsnn.active.layout import DATA_FILE
from exsnn.active.train import committee_folder, test_frames_of_iteration
from exsnn.data.splits import load_split
from exsnn.errors import ConfigurationError, DataError
from exsnn.model.potential import DRIVERS
from exsnn.model.training import MODEL_FILE

ORIGIN_FILE = "ORIGIN.json"
MODES_FILE = "modes.json"
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
    if entry.get("test_errors"):  # the iteration's report
        origin["test_errors"] = entry["test_errors"]
        origin["n_test_of_errors"] = int(len(test_frames_of_iteration(root / DATA_FILE, iteration)))
        note += f"; test errors of the iteration's report, on {origin['n_test_of_errors']} held-out frames"
    return {**origin, "note": note}


def _run_as(config: CampaignConfig, modes: Path | None) -> dict[str, Any]:
    """How the campaign's dynamics ran its committees (ORIGIN.json's "run_as")."""
    d = config.dynamics
    run_as: dict[str, Any] = {"initial_state": d.initial_state, "driver": d.driver, "dt_fs": d.dt_fs,
                              "ground_state_end_fs": d.ground_state_end_fs, "oracle": config.oracle.spec}
    if modes is not None:
        run_as["modes"] = MODES_FILE
    return run_as


def run_as(folder: str | Path) -> dict[str, Any]:
    """ORIGIN.json's "run_as" of an exported committee folder ({} for any other model), with "modes" as a full path;
    DataError if ORIGIN.json is there but cannot be read."""
    folder = Path(folder)
    origin = folder / ORIGIN_FILE
    if not folder.is_dir() or not origin.exists():
        return {}
    try:
        settings = json.loads(origin.read_text()).get("run_as", {})
    except (OSError, ValueError, AttributeError) as error:
        raise DataError(origin, "", f"cannot read the export's origin: {error}") from None
    if not isinstance(settings, dict):
        raise DataError(origin, "run_as", "must be a table of settings")
    _check_run_as(settings, origin)
    if settings.get("modes"):
        settings["modes"] = str(folder / settings["modes"])
    return settings


def _check_run_as(settings: dict[str, Any], origin: Path) -> None:
    """DataError naming the field of `run_as` whose value cannot be run."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

    state = settings.get("initial_state", 2)
    checks = {
        "initial_state": (isinstance(state, int) and not isinstance(state, bool) and state >= 1, "an excited state index (1 = S1)"),
        "driver": (settings.get("driver", "mean") in DRIVERS, f"one of {DRIVERS}"),
        "dt_fs": (number(settings.get("dt_fs", 0.5)), "a positive time step in fs"),
        "ground_state_end_fs": (settings.get("ground_state_end_fs") is None or number(settings["ground_state_end_fs"]),
                                "a positive time in fs or null"),
        "modes": (settings.get("modes") is None or isinstance(settings["modes"], str), "a file name beside ORIGIN.json"),
    }
    for field, (ok, wanted) in checks.items():
        if not ok:
            raise DataError(origin, f"run_as.{field}", f"must be {wanted}, got {settings.get(field)!r}")


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
    modes = config.resolve(config.initial.modes) if config.initial.modes is not None else None
    if modes is not None and not modes.is_file():
        raise DataError(modes, "", "the campaign's modes file ([initial] modes) is missing: the export would not run as the campaign ran")
    origin["run_as"] = _run_as(config, modes)
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
    if modes is not None:
        shutil.copy2(modes, staging / MODES_FILE)
    (staging / ORIGIN_FILE).write_text(json.dumps(origin, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return origin
