"""Surface hopping on the committee (its mean, or each trajectory on one member: `[dynamics] driver`) with the
committee's disagreement recorded per step and trajectory.

The committee is wrapped in a potential that keeps, for every structure of the engine's main call of a step (the one
asking for NACs), the three disagreement measures of `exsnn.active.measure`, keyed by trajectory id. After each step
the loop stores positions, active states, populations, gaps, disagreement and the spread of the members' hopping
probabilities out of the active state (`measure.hop_disagreement`, with the step's velocities and coefficients); a running trajectory whose
disagreement exceeds an upper threshold stops there with status UNCERTAIN (what would follow is not trusted). For
that check the energies measure counts only the active state and the states within `[thresholds] stop_window_ev` of it
(`stop_energies` in the record); the full measure still makes candidates. With
`[dynamics] ground_state_end_fs` a trajectory that has stayed that long in S0 ends as RELAXED (SHARC's killafter): its
record stops there (no frames to select from the hot ground state) and the populations keep it in S0
(`exsnn.active.decide.settled_active`).

With `[dynamics] member_runs` (default on) every member also drives the same initial conditions alone, to the end:
the spread of their populations is the model part of the uncertainty of the committee's populations (the trajectory
bootstrap gives the statistical part; `exsnn.active.decide.population_bands` combines both). The record keeps each
member's active states per trajectory (`member_active`), so that the part of that spread which is only each member's
own sampling noise can be taken out (`exsnn.active.decide.member_spread`).

The full per-step record (`dynamics.npz`, megabytes) is working data; the populations part of it (`populations.npz`,
kilobytes: `POPULATION_KEYS`) is what a campaign folder keeps, and is all that the stopping rule and the next
iteration's report need from an iteration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exsnn.active.config import CampaignConfig
from exsnn.active.layout import save_npz_atomic
from exsnn.active.measure import Thresholds, disagreement, hop_disagreement
from exsnn.active.sample import dynamics_initial_conditions
from exsnn.analysis.populations import one_hot
from exsnn.dynamics.fssh import FSSHEngine, populations
from exsnn.dynamics.settings import FSSHSettings
from exsnn.dynamics.state import RUNNING, UNCERTAIN
from exsnn.model.potential import ModelPotential, model_files
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.units import EV_IN_HARTREE, FS_IN_AU_TIME

#: the keys of the record that populations, their bands and the stopping rule need (`exsnn.active.decide`)
POPULATION_KEYS = ("time_fs", "active", "status", "member_populations", "member_active")
RECORD_FILE = "dynamics.npz"
POPULATIONS_FILE = "populations.npz"


class RecordingCommittee(Potential):
    """A committee potential that remembers the disagreement of its last main call, per trajectory id."""

    def __init__(self, committee: ModelPotential) -> None:
        self.committee = committee
        self.n_states, self.numbers, self.masses, self.device = committee.n_states, committee.numbers, committee.masses, committee.device
        self.last: dict[int, np.ndarray] = {}
        self.last_nacs: dict[int, torch.Tensor] = {}  # trajectory id -> the members' aligned NACs (K, P, n, 3)
        self.last_energy_spread: dict[int, np.ndarray] = {}  # trajectory id -> spread of each state's energy (N,)

    def compute(self, positions: torch.Tensor, states: torch.Tensor | None = None, all_forces: bool = False,
                nacs: bool = True, trajectories: torch.Tensor | None = None) -> PotentialOutput:
        out = self.committee.compute(positions, states=states, all_forces=all_forces, nacs=nacs, trajectories=trajectories)
        if nacs and states is not None:  # the step's main call (hop refreshes ask for forces only)
            ids = range(len(positions)) if trajectories is None else trajectories.tolist()
            self.last = dict(zip(ids, disagreement(self.committee, out)))
            self.last_energy_spread = dict(zip(ids, self.committee.last_disagreement["energies"].detach().cpu().numpy()))
            stack = self.committee.last_member_nacs
            self.last_nacs = {} if stack is None else {k: stack[:, row] for row, k in enumerate(ids)}
        return out

    def describe(self) -> str:
        return self.committee.describe()


def simulate(committee: Path, oracle: Potential, config: CampaignConfig, iteration: int, thresholds: Thresholds,
             output: Path) -> dict[str, np.ndarray]:
    """Run the iteration's ensemble on the committee; write (`save_record`) and return the per-step record."""
    potential = ModelPotential(committee, oracle.numbers.cpu().numpy(), dtype=torch.float64, driver=config.dynamics.driver)
    recorder = RecordingCommittee(potential)
    d = config.dynamics
    n_steps = int(round(d.duration_fs / d.dt_fs))
    settings = FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=n_steps, seed=config.run.seed * 1000 + iteration,
                            ground_state_end=None if d.ground_state_end_fs is None else d.ground_state_end_fs * FS_IN_AU_TIME)
    engine = FSSHEngine(recorder, settings)
    positions, velocities = dynamics_initial_conditions(config, oracle, iteration)
    B, n = positions.shape[:2]
    state = engine.initial_state(positions, velocities, torch.full((B,), d.initial_state, dtype=torch.long))
    record = {
        "positions": np.full((n_steps + 1, B, n, 3), np.nan, dtype=np.float64),
        "active": np.full((n_steps + 1, B), -1, dtype=np.int64),
        "quantum": np.full((n_steps + 1, B, engine.n_states), np.nan),
        "energies": np.full((n_steps + 1, B, engine.n_states), np.nan),
        "total": np.full((n_steps + 1, B), np.nan),  # active-state potential + kinetic energy, Hartree
        "disagreement": np.full((n_steps + 1, B, 3), np.nan),
        "hop_disagreement": np.full((n_steps + 1, B), np.nan),  # spread of the hop probability (measure.hop_disagreement)
        "stop_energies": np.full((n_steps + 1, B), np.nan),  # energy spread that can stop it (window_energy_spread)
        "status": np.zeros((n_steps + 1, B), dtype=np.int64),
    }

    def store(step: int, running_before: np.ndarray) -> None:
        rows = np.flatnonzero(running_before)
        record["positions"][step, rows] = state.positions[rows].cpu().numpy()
        record["active"][step, rows] = state.active[rows].cpu().numpy()
        record["quantum"][step, rows] = populations(state.coefficients[rows]).cpu().numpy()
        record["energies"][step, rows] = state.energies[rows].cpu().numpy()
        record["total"][step, rows] = engine.total_energy(state)[rows].cpu().numpy()
        for b in rows:
            if int(b) in recorder.last:
                record["disagreement"][step, b] = recorder.last[int(b)]
        with_nacs = [int(b) for b in rows if int(b) in recorder.last_nacs]
        if with_nacs:
            index = torch.as_tensor(with_nacs)
            record["hop_disagreement"][step, with_nacs] = hop_disagreement(
                torch.stack([recorder.last_nacs[b] for b in with_nacs], dim=1), state.velocities[index],
                state.coefficients[index], state.active[index], settings.dt)
        spread_rows = [int(b) for b in rows if int(b) in recorder.last_energy_spread]
        if spread_rows:
            record["stop_energies"][step, spread_rows] = window_energy_spread(
                np.stack([recorder.last_energy_spread[b] for b in spread_rows]), record["energies"][step, spread_rows],
                record["active"][step, spread_rows], config.thresholds.stop_window_ev)
        stopping = record["disagreement"][step].copy()
        stopping[:, 0] = record["stop_energies"][step]
        _, above_upper = thresholds.ratios(stopping)
        crossing = np.flatnonzero(running_before & (above_upper >= 1.0) & (state.status.cpu().numpy() == RUNNING))
        if len(crossing):
            state.status[torch.as_tensor(crossing)] = UNCERTAIN
        record["status"][step] = state.status.cpu().numpy()

    store(0, np.ones(B, dtype=bool))
    while state.step < n_steps and bool((state.status == RUNNING).any()):
        running = (state.status == RUNNING).cpu().numpy()
        engine.step(state)
        store(state.step, running)
    for step in range(state.step + 1, n_steps + 1):
        record["status"][step] = record["status"][state.step]
    record["time_fs"] = np.arange(n_steps + 1) * d.dt_fs
    if d.member_runs:
        record["member_active"] = np.stack([
            member_active_states(member, oracle, settings, positions, velocities, d.initial_state)
            for member in model_files(committee)])
        record["member_populations"] = one_hot(record["member_active"], oracle.n_states).mean(axis=2)  # (K, T, N)
    save_record(output, record)
    return record


def window_energy_spread(spread: np.ndarray, energies: np.ndarray, active: np.ndarray, window_ev: float) -> np.ndarray:
    """The largest energy spread (Hartree) over the active state and the states within `window_ev` of it, (B,): spread
    and energies (B, N) in Hartree, active (B,)."""
    own = np.take_along_axis(energies, active[:, None], axis=1)
    near = np.abs(energies - own) <= window_ev * EV_IN_HARTREE
    np.put_along_axis(near, active[:, None], True, axis=1)
    return np.where(near, spread, -np.inf).max(axis=1)


def save_record(output: Path, record: dict[str, np.ndarray]) -> None:
    """Write the full record to `output` and its populations part (compressed) to POPULATIONS_FILE beside it."""
    save_npz_atomic(output, **record)
    save_npz_atomic(output.with_name(POPULATIONS_FILE), compressed=True,
                    **{key: record[key] for key in POPULATION_KEYS if key in record})


def member_active_states(model: Path, oracle: Potential, settings: FSSHSettings, positions: torch.Tensor,
                         velocities: torch.Tensor, initial_state: int) -> np.ndarray:
    """Active states (T + 1, B) int8 of one committee member driving the ensemble alone (same initial conditions, same
    seed as the committee's run), every step to the end."""
    engine = FSSHEngine(ModelPotential(model, oracle.numbers.cpu().numpy(), dtype=torch.float64), settings)
    B = positions.shape[0]
    state = engine.initial_state(positions, velocities, torch.full((B,), initial_state, dtype=torch.long))
    rows = [state.active.cpu().numpy().astype(np.int8)]
    while state.step < settings.n_steps:
        engine.step(state)
        rows.append(state.active.cpu().numpy().astype(np.int8))
    return np.array(rows)
