"""The active-learning loop, resumable at any point.

Iteration 0 starts with the initial Wigner set labelled by the oracle. Each iteration then runs the phases

    train -> simulate -> decide -> select -> label -> report

and state.json records the phase about to run. Every phase is idempotent (see `exsnn.active.layout`): killing the
process at any instant and resuming loses no label, duplicates none, and does not redo a finished phase (a committee
member whose training was interrupted is retrained from its start, so the result equals an uninterrupted run).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exsnn.active.config import CampaignConfig, load_config, parse_config
from exsnn.active.decide import Decision, decide
from exsnn.active.label import failed_frames, label_structures, oracle_metadata, unlabelled
from exsnn.active.layout import CampaignDirectory, CampaignState, campaign_lock, save_npz_atomic, write_atomic_text
from exsnn.active.measure import Thresholds, calibrate, committee_errors
from exsnn.active.report import labels_above_total_energy, write_report
from exsnn.active.sample import campaign_modes, initial_geometries
from exsnn.active.seam import SEAM_CHECK_FILE, check_seams, label_seam_loops, retrain_disagreeing
from exsnn.active.select import select
from exsnn.active.simulate import POPULATIONS_FILE, RECORD_FILE, simulate
from exsnn.active.train import campaign_split, test_frames_of_iteration, train_committee
from exsnn.analysis.kinetics import parse_network
from exsnn.data import count_frames, read_frames
from exsnn.data.geometries import read_structures
from exsnn.errors import ConfigurationError, DataError
from exsnn.model.network import check_coupling_symmetry
from exsnn.model.potential import ModelPotential
from exsnn.potentials.base import Potential
from exsnn.potentials.spec import load_potential


def load_oracle(config: CampaignConfig) -> Potential:
    """The campaign's oracle potential (atoms from the initial or dynamics file, or the modes file, for pyscf:)."""
    numbers = None
    for file in (config.initial.file, config.dynamics.file):
        if file is not None:
            numbers = read_structures(config.resolve(file))[0][0]
            break
    if numbers is None and config.initial.modes is not None:
        numbers = campaign_modes(config).numbers
    try:
        oracle = load_potential(config.oracle_spec(), config.path.parent, "cpu", numbers=numbers)
    except ConfigurationError as exc:
        raise ConfigurationError(exc.problem, source=config.path, where="[oracle] spec") from None
    if config.stopping.kinetics:
        try:
            parse_network(config.stopping.kinetics, oracle.n_states)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.problem, source=config.path, where="[stopping] kinetics") from None
    if config.dynamics.initial_state >= oracle.n_states:
        raise ConfigurationError(f"S{config.dynamics.initial_state} does not exist: the oracle has {oracle.n_states} states",
                                 source=config.path, where="[dynamics] initial_state")
    if config.seam.pair and config.seam.pair[1] >= oracle.n_states:
        raise ConfigurationError(f"S{config.seam.pair[1]} does not exist: the oracle has {oracle.n_states} states",
                                 source=config.path, where="[seam] pair")
    c = config.committee
    try:
        check_coupling_symmetry(c.exchange, c.odd_couplings, oracle.numbers.tolist(), oracle.n_states)
    except ConfigurationError as exc:
        raise ConfigurationError(exc.problem, source=config.path, where=f"[committee] {exc.where}") from None
    return oracle


def start(config_path: str | Path, root: str | Path, overwrite: bool = False) -> CampaignDirectory:
    """Check the input (and that the oracle loads) before anything is written, then create the campaign directory."""
    config = load_config(config_path)
    from exsnn.model.training import RECIPES

    if config.committee.recipe not in RECIPES:
        raise ConfigurationError(f"unknown; expected one of {sorted(RECIPES)}", source=config.path, where="[committee] recipe")
    oracle = load_oracle(config)
    initial_geometries(config, oracle)  # fails here, not later, if the initial set cannot be drawn
    directory = CampaignDirectory(root)
    if directory.root.exists() and any(directory.root.iterdir()):
        if not overwrite:
            raise ConfigurationError("is not empty: resume it with `exsnn campaign resume`, or pass --overwrite",
                                     source=directory.root)
        with campaign_lock(directory.root):  # not from under a campaign that is running there
            shutil.rmtree(directory.root)
    directory.root.mkdir(parents=True, exist_ok=True)
    write_atomic_text(directory.root / "source.json", json.dumps({"config_dir": str(config.path.parent), "config_name": config.path.name}))
    write_atomic_text(directory.config, config.text)
    directory.write_state(CampaignState())
    return directory


def open_campaign(root: str | Path) -> tuple[CampaignDirectory, CampaignConfig]:
    """A campaign directory and its configuration (relative paths resolved from the original file's folder)."""
    directory = CampaignDirectory(root)
    if not directory.config.exists() or not (directory.root / "source.json").exists():
        raise DataError(directory.root, "campaign.toml", "not a campaign directory (start one with `exsnn campaign run`)")
    source = json.loads((directory.root / "source.json").read_text())
    config_dir = Path(source["config_dir"])
    if not config_dir.is_dir():  # the campaign was moved or cloned elsewhere: its file's folder was beside it
        config_dir = directory.root.parent
    return directory, parse_config(directory.config.read_text(), config_dir / source["config_name"])


def _load_record(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a campaign .npz file, None if it does not exist; DataError if it cannot be read."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as exc:  # truncated, not a zip, or pickled data
        raise DataError(path, "file", f"not a readable campaign record ({type(exc).__name__}: {exc}); delete it and "
                                      f"resume to make it again") from None


def _load_thresholds(path: Path) -> Thresholds:
    return Thresholds(**json.loads(path.read_text()))


class Campaign:
    """Runs the phases of a campaign directory until a stopping rule holds (see module docstring)."""

    def __init__(self, root: str | Path, progress: Any = None) -> None:
        self.directory, self.config = open_campaign(root)
        self.oracle = load_oracle(self.config)
        self.metadata = oracle_metadata(self.oracle, self.config.oracle.spec)
        self.numbers = self.oracle.numbers.cpu().numpy()
        self.say = progress or (lambda message: None)
        torch.set_num_threads(self.config.committee.threads)

    # ---------------------------------------------------------------- phases
    def initial_tags(self, n_frames: int) -> list[dict[str, Any]]:
        """The provenance tags of the initial set: every k-th frame held out (k from `test_fraction`)."""
        every = max(2, int(round(1 / self.config.initial.test_fraction)))
        return [{"iteration": 0, "index": k, "kind": "initial", "split": "test" if k % every == every - 1 else "train"}
                for k in range(n_frames)]

    def _initial(self, state: CampaignState) -> None:
        positions = initial_geometries(self.config, self.oracle)
        tags = self.initial_tags(len(positions))
        self.say(f"labelling {self._pending(tags)} initial geometries with {self.oracle.describe()}")
        label_structures(self.directory.data, self.oracle, positions, tags, self.metadata, self.config.oracle.batch)
        if self.config.seam.pair:
            label_seam_loops(self.directory.data, self.oracle, self.config, self.metadata, self.say)
        state.phase = "train"

    def _train(self, state: CampaignState) -> None:
        i = state.iteration
        earlier = [self.directory.iteration(k) for k in range(i - 1, -1, -1)]  # newest first
        self.say(f"iteration {i}: training {self.config.committee.members} committee members on "
                 f"{self._count()} labels" + (" (warm start from the newest earlier members of the same architecture)"
                                              if earlier and self.config.committee.warm_start else ""))
        train_committee(self.directory.data, self.directory.iteration(i), earlier, self.config, i)
        if self.config.seam.pair and self.config.seam.retrains:
            retrain_disagreeing(self.directory.data, self.directory.iteration(i), earlier, self.config, i, self.numbers, self.say)
        state.phase = "simulate"

    def _committee(self, i: int) -> ModelPotential:
        return ModelPotential(self.directory.iteration(i) / "committee", self.numbers, dtype=torch.float64)

    def _simulate(self, state: CampaignState) -> None:
        i = state.iteration
        folder = self.directory.iteration(i)
        arrays = read_frames(self.directory.data)
        split = campaign_split(self.directory.data, seed=self.config.run.seed * 7919 + i)
        committee = self._committee(i)
        thresholds = calibrate(committee, arrays, np.concatenate([split["val"], split["test"]]), self.config.thresholds)
        write_atomic_text(folder / "thresholds.json", json.dumps(thresholds.as_dict(), indent=2))
        errors = committee_errors(committee, arrays, split["test"])
        write_atomic_text(folder / "test_errors.json", json.dumps(errors, indent=2))
        seams = check_seams(self.directory.data, folder / "committee", self.numbers, self.config.seam)
        if seams is not None:
            write_atomic_text(folder / SEAM_CHECK_FILE, json.dumps(seams, indent=2))
        d = self.config.dynamics
        self.say(f"iteration {i}: {d.n_trajectories} trajectories, {d.duration_fs:g} fs on the committee")
        simulate(folder / "committee", self.oracle, self.config, i, thresholds, folder / RECORD_FILE)
        state.phase = "decide"

    def _record(self, i: int, full: bool) -> dict[str, np.ndarray] | None:
        """Iteration i's dynamics record: the full one (`full`) or at least its populations part; None when the
        iteration has not simulated yet. A folder that kept only the populations (a shipped campaign: the full record
        is working data) runs the iteration's ensemble again, with its stored thresholds, when the full one is needed."""
        folder = self.directory.iteration(i)
        record = _load_record(folder / RECORD_FILE)
        if record is not None or not (folder / "thresholds.json").exists():
            return record
        if not full and (compact := _load_record(folder / POPULATIONS_FILE)) is not None:
            return compact
        self.say(f"iteration {i}: {RECORD_FILE} is not in this folder: running the iteration's ensemble again")
        return simulate(folder / "committee", self.oracle, self.config, i, _load_thresholds(folder / "thresholds.json"),
                        folder / RECORD_FILE)

    def _decision(self, state: CampaignState) -> Decision:
        i = state.iteration
        record = self._record(i, full=False)
        previous = self._record(i - 1, full=False) if i > 0 else None
        assert record is not None
        seams = self.directory.iteration(i) / SEAM_CHECK_FILE
        agree = json.loads(seams.read_text())["all_agree"] if seams.exists() else None
        return decide(record, previous, self.oracle.n_states, i, self._count(), self.config.stopping, agree)

    def _select(self, state: CampaignState) -> None:
        i = state.iteration
        folder = self.directory.iteration(i)
        record = self._record(i, full=True)
        assert record is not None
        budget = min(self.config.selection.budget, self.config.stopping.label_budget - self._count())
        labelled = None  # the structures already labelled seed the near-gap share (when there is one)
        if self.config.selection.gap_share > 0:
            labelled = read_frames(self.directory.data).positions.reshape(-1, len(self.numbers), 3)
        chosen = select(record, self.numbers, _load_thresholds(folder / "thresholds.json"), self.config.selection, budget,
                        labelled)
        save_npz_atomic(folder / "selection.npz", **chosen)
        self.say(f"iteration {i}: selected {len(chosen['positions'])} of {int(chosen['candidates'])} candidate frames")
        state.phase = "label"

    def _label(self, state: CampaignState) -> None:
        i = state.iteration
        chosen = _load_record(self.directory.iteration(i) / "selection.npz")
        assert chosen is not None
        every = self.config.selection.test_every
        tags = [{"iteration": i + 1, "index": k, "kind": "dynamics", "split": "test" if k % every == every - 1 else "train",
                 "trajectory": int(chosen["trajectory"][k]), "step": int(chosen["step"][k]),
                 "time_fs": float(chosen["step"][k] * self.config.dynamics.dt_fs), "score": float(chosen["score"][k]),
                 **({"active": int(chosen["active"][k])} if "active" in chosen else {}),
                 **({"total_energy": float(chosen["total"][k])} if "total" in chosen else {})}
                for k in range(len(chosen["positions"]))]
        self.say(f"iteration {i}: labelling {self._pending(tags)} geometries with the oracle")
        label_structures(self.directory.data, self.oracle, torch.as_tensor(chosen["positions"]), tags, self.metadata,
                         self.config.oracle.batch)
        state.phase = "report"

    def _report(self, state: CampaignState, decision: Decision) -> None:
        i = state.iteration
        folder = self.directory.iteration(i)
        record = self._record(i, full=True)
        previous = self._record(i - 1, full=False) if i > 0 else None
        selection = _load_record(folder / "selection.npz")
        arrays = read_frames(self.directory.data)
        split = campaign_split(self.directory.data, seed=0)
        summary = {"iteration": i, "n_labels": self._count(), "n_test": int(len(split["test"])),
                   "n_test_of_errors": int(len(test_frames_of_iteration(self.directory.data, i))),
                   "test_errors": json.loads((folder / "test_errors.json").read_text()),
                   "decision": decision.as_dict(), "finished_fraction": decision.finished_fraction}
        d = self.config.dynamics
        title = (f"oracle {self._oracle_name()}: {d.n_trajectories} trajectories from S{d.initial_state}, committee of "
                 f"{self.config.committee.members}, {self._count()} labels")
        labelled = np.stack([arrays.frame(k).positions for k in range(arrays.n_frames)])
        assert record is not None
        summary["labels_above_total_energy"] = labels_above_total_energy(arrays, i + 1)
        if (folder / SEAM_CHECK_FILE).exists():
            summary["seam_check"] = json.loads((folder / SEAM_CHECK_FILE).read_text())
        write_report(folder, i, summary, record, previous, _load_thresholds(folder / "thresholds.json"), selection,
                     labelled, self.numbers, self.oracle.n_states, title)
        state.history = [h for h in state.history if h["iteration"] != i] + [summary]
        if decision.stop is not None:
            state.stopped, state.converged = decision.stop, decision.stop == "converged"
        else:
            state.iteration, state.phase = i + 1, "train"

    def _oracle_name(self) -> str:
        prefix, _, argument = self.config.oracle.spec.partition(":")
        return f"{prefix} {Path(argument).parent.name}" if prefix == "lvc" else self.config.oracle.spec

    def _pending(self, tags: list[dict[str, Any]]) -> str:
        """'K' or 'K of N (the rest labelled before an interruption)' for the progress messages."""
        todo = len(unlabelled(self.directory.data, tags))
        return str(todo) if todo == len(tags) else f"{todo} of {len(tags)} (the rest labelled before an interruption)"

    def _count(self) -> int:
        return count_frames(self.directory.data) if self.directory.data.exists() else 0

    # ---------------------------------------------------------------- loop
    def run(self) -> CampaignState:
        """Run phases until the campaign stops; state.json is written after every phase."""
        with campaign_lock(self.directory.root):
            return self._run()

    def _run(self) -> CampaignState:
        state = self.directory.read_state()
        self._reopen_if_rule_changed(state)
        while state.stopped is None:
            phase, started = state.phase, time.perf_counter()
            if phase == "initial":
                self._initial(state)
            else:
                self.directory.iteration(state.iteration).mkdir(parents=True, exist_ok=True)
                if phase == "train":
                    self._train(state)
                elif phase == "simulate":
                    self._simulate(state)
                elif phase == "decide":
                    decision = self._decision(state)
                    state.phase = "report" if decision.stop else "select"
                elif phase == "select":
                    self._select(state)
                elif phase == "label":
                    self._label(state)
                elif phase == "report":
                    self._report(state, self._decision_for_report(state))
            state.phase_seconds[phase] = state.phase_seconds.get(phase, 0.0) + time.perf_counter() - started
            state.n_labels = self._count()
            self.directory.write_state(state)
        return state

    def _reopen_if_rule_changed(self, state: CampaignState) -> None:
        """A stopped campaign whose stopping rule, under the present campaign.toml (a larger label budget or iteration
        limit, a stricter convergence rule), no longer stops it goes on from the selection of its last iteration."""
        if state.stopped is None or state.phase == "initial":
            return
        record = self._record(state.iteration, full=False)
        if record is None or (self.directory.iteration(state.iteration) / "selection.npz").exists():
            return
        decision = self._decision(state)
        if decision.stop is None:
            self.say(f"iteration {state.iteration}: stopped before ({state.stopped}), but not under the present "
                     f"campaign.toml: going on")
            state.stopped, state.converged, state.phase = None, False, "select"
            self.directory.write_state(state)

    def _decision_for_report(self, state: CampaignState) -> Decision:
        """The decision of this iteration as taken before labelling (labels added since do not change it)."""
        folder = self.directory.iteration(state.iteration)
        if (folder / "selection.npz").exists():  # the campaign went on: it did not stop at this iteration
            decision = self._decision(state)
            return dataclasses.replace(decision, stop=None)
        return self._decision(state)


def status(root: str | Path) -> dict[str, Any]:
    """What `exsnn campaign status --json` prints."""
    directory, config = open_campaign(root)
    state = directory.read_state()
    latest = state.history[-1] if state.history else {}
    n_labels = count_frames(directory.data) if directory.data.exists() else state.n_labels  # live during a labelling phase
    return {"iteration": state.iteration, "phase": state.phase, "n_labels": n_labels, "stopped": state.stopped,
            "n_failed": len(failed_frames(directory.data)), "converged": state.converged,
            "label_budget": config.stopping.label_budget,
            "finished_fraction": latest.get("finished_fraction"), "test_errors": latest.get("test_errors", {}),
            "phase_seconds": state.phase_seconds, "history": state.history}
