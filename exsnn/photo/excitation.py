"""Excited states at every sampled geometry, and the choice of initial states for surface hopping.

Per geometry: energies of S0..S(N-1), excitation energies dE_k = E_k - E_0, S0 -> Sk transition dipoles and
oscillator strengths f_k = 2/3 dE_k |mu_0k|^2, from PySCF (TDA, TDDFT or SA-CASSCF through
`exsnn.qm.pyscf_backend.label_geometry`, on an `exsnn.parallel` pool) or from any potential that gives transition
dipoles (e.g. an LVC model).

Selection (all criteria combine; a geometry may start trajectories in several states, each an independent trial):

* window: dE within [low, high] (eV);
* states: only the listed states (1 = S1, ...);
* stochastic: each (geometry, state) left is accepted with probability p = (f / dE^2) / max(f / dE^2), the maximum
  taken over the ensemble's candidates left by the other criteria: the excitation probability of a delta pulse,
  proportional to |mu|^2 / dE, i.e. f / dE^2 (Barbatti, J. Am. Chem. Soc. 136, 11346 (2014); SHARC's excite.py
  with its normalisation, combinable here with the window and the states).

The random numbers come from numpy's generator seeded with `seed`, one per (geometry, state) in a fixed order, so
the decision for a pair does not depend on the other criteria or on the other pairs.

Excitations file (JSON)::

    {"format": "exsnn-excitations", "format_version": 1, "method": "...", "numbers": [n],
     "positions_bohr": [G][n][3], "velocities_au": [G][n][3] or null, "energies_hartree": [G][N] (null: failed),
     "oscillator_strengths": [G][N-1], "transition_dipoles_au": [G][N-1][3], "failures": {"g": "reason"}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError, DataError
from exsnn.units import EV_IN_HARTREE, HARTREE_IN_EV

FORMAT_NAME = "exsnn-excitations"
FORMAT_VERSION = 1


@dataclass
class Excitations:
    """G geometries (n atoms, N states): positions (G, n, 3) Bohr, velocities (G, n, 3) or None, energies (G, N)
    Hartree (NaN rows: failed geometries), oscillator strengths (G, N-1), transition dipoles (G, N-1, 3) e*Bohr."""

    numbers: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None
    energies: np.ndarray
    strengths: np.ndarray
    transition_dipoles: np.ndarray
    method: str = ""
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def excitation_energies(self) -> np.ndarray:
        """dE (G, N-1) Hartree."""
        return self.energies[:, 1:] - self.energies[:, :1]

    @property
    def n_states(self) -> int:
        return int(self.energies.shape[1])

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def rows(array: np.ndarray) -> list[Any]:
            return [None if not np.all(np.isfinite(row)) else np.asarray(row).tolist() for row in array]

        data = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "method": self.method,
            "numbers": [int(z) for z in self.numbers],
            "positions_bohr": np.asarray(self.positions).tolist(),
            "velocities_au": None if self.velocities is None else np.asarray(self.velocities).tolist(),
            "energies_hartree": rows(self.energies),
            "oscillator_strengths": rows(self.strengths),
            "transition_dipoles_au": rows(self.transition_dipoles),
            "failures": {str(k): v for k, v in self.failures.items()},
        }
        path.write_text(json.dumps(data) + "\n")
        return path


def read_excitations(path: str | Path) -> Excitations:
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file", "does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, "file", f"invalid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise DataError(path, "format", f"not an exsnn excitations file (expected format = {FORMAT_NAME!r})")
    try:
        numbers = np.asarray(data["numbers"], dtype=np.int64)
        positions = np.asarray(data["positions_bohr"], dtype=float)
        G = len(positions)
        energies_rows = data["energies_hartree"]
        N = next((len(r) for r in energies_rows if r is not None), None)
        if N is None:
            raise DataError(path, "energies_hartree", "every geometry failed")

        def table(key: str, shape: tuple[int, ...]) -> np.ndarray:
            values = data[key]
            if len(values) != G:
                raise DataError(path, key, f"{len(values)} rows for {G} geometries")
            return np.array([np.full(shape, np.nan) if row is None else np.asarray(row, dtype=float).reshape(shape) for row in values])

        energies = table("energies_hartree", (N,))
        strengths = table("oscillator_strengths", (N - 1,))
        dipoles = table("transition_dipoles_au", (N - 1, 3))
        velocities = None if data.get("velocities_au") is None else np.asarray(data["velocities_au"], dtype=float)
    except KeyError as exc:
        raise DataError(path, str(exc.args[0]), "missing") from None
    except (TypeError, ValueError) as exc:
        raise DataError(path, "arrays", f"malformed ({exc})") from None
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise DataError(path, "positions_bohr", f"shape {positions.shape}, expected (G, {len(numbers)}, 3)")
    if velocities is not None and velocities.shape != positions.shape:
        raise DataError(path, "velocities_au", f"shape {velocities.shape}, expected {positions.shape}")
    failures = {int(k): str(v) for k, v in data.get("failures", {}).items()}
    return Excitations(numbers, positions, velocities, energies, strengths, dipoles, str(data.get("method", "")), failures)


def _excite_one(task: tuple[np.ndarray, np.ndarray, Any]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str | None]:
    """Top level (picklable): energies, oscillator strengths, transition dipoles or the failure at one geometry."""
    from exsnn.qm.pyscf_backend import label_geometry

    numbers, positions, settings = task
    result = label_geometry(numbers, positions, settings, gradients=[], nacs=False)
    if result.failure is not None or result.energies is None:
        return None, None, None, result.failure or "no energies"
    if result.oscillator_strengths is None or result.transition_dipoles is None:
        return None, None, None, "no transition dipoles"
    return (np.asarray(result.energies), np.asarray(result.oscillator_strengths), np.asarray(result.transition_dipoles), None)


def compute_excitations(numbers: np.ndarray, positions: np.ndarray, settings: Any, velocities: np.ndarray | None = None,
                        executor: str = "serial") -> Excitations:
    """Excited states of every geometry (G, n, 3) Bohr with PySCF (settings: `exsnn.qm.settings.QMSettings`, at
    least 2 states); a geometry that fails is recorded with its reason and NaN values."""
    from exsnn.parallel import open_pool
    from exsnn.parallel.executors import WorkerDied

    if settings.n_states < 2:
        raise ConfigurationError("excitations need at least 2 states (S0 and S1): states=N with N >= 2", where="--method")
    positions = np.asarray(positions, dtype=float)
    G, N = len(positions), settings.n_states
    energies = np.full((G, N), np.nan)
    strengths = np.full((G, N - 1), np.nan)
    dipoles = np.full((G, N - 1, 3), np.nan)
    failures: dict[int, str] = {}
    tasks = [(np.asarray(numbers), positions[g], settings) for g in range(G)]
    with open_pool(executor, threads=settings.threads) as pool:
        results = pool.map(_excite_one, tasks)
    for g, result in enumerate(results):
        if isinstance(result, WorkerDied):
            failures[g] = str(result)
            continue
        e, f, mu, failure = result
        if failure is not None:
            failures[g] = failure
            continue
        energies[g], strengths[g], dipoles[g] = e, f, mu
    return Excitations(np.asarray(numbers), positions, velocities, energies, strengths, dipoles,
                       method=f"{settings.method_label}/{settings.basis}", failures=failures)


def excitations_from_potential(potential: Any, positions: np.ndarray, velocities: np.ndarray | None = None,
                               batch: int = 256) -> Excitations:
    """Excited states from an `exsnn.potentials` potential that gives transition dipoles (pairs 00, 01, ...: the
    S0 -> Sk dipole is pair k); positions (G, n, 3) Bohr."""
    import torch

    positions = np.asarray(positions, dtype=float)
    energies, dipoles = [], []
    for start in range(0, len(positions), batch):
        chunk = torch.as_tensor(positions[start:start + batch], dtype=torch.float64, device=potential.device)
        out = potential.compute(chunk, nacs=False)
        if out.dipoles is None:
            raise ConfigurationError(f"{potential.describe()} gives no transition dipoles: oscillator strengths need them",
                                     where="--potential")
        energies.append(out.energies.cpu().numpy())
        dipoles.append(out.dipoles.cpu().numpy()[:, 1:potential.n_states])
    E = np.concatenate(energies)
    mu = np.concatenate(dipoles)
    excitation = E[:, 1:] - E[:, :1]
    strengths = 2.0 / 3.0 * excitation * np.sum(mu * mu, axis=2)
    return Excitations(potential.numbers.cpu().numpy(), positions, velocities, E, strengths, mu, method=potential.describe())


@dataclass
class Selection:
    """Chosen initial conditions (S,): geometry index, state (1 = S1), the acceptance probability used (1 for
    deterministic criteria), excitation energy (Hartree) and oscillator strength; and the criteria as text."""

    geometry: np.ndarray
    state: np.ndarray
    probability: np.ndarray
    excitation: np.ndarray
    strength: np.ndarray
    criteria: str

    def __len__(self) -> int:
        return len(self.geometry)

    def rows(self) -> list[dict[str, Any]]:
        return [{"geometry": int(g), "state": int(s), "probability": float(p), "excitation_ev": float(e * HARTREE_IN_EV),
                 "oscillator_strength": float(f)}
                for g, s, p, e, f in zip(self.geometry, self.state, self.probability, self.excitation, self.strength)]


def delta_pulse_weights(excitation: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """f / dE^2 (G, K), the relative excitation probability of a delta pulse (0 where undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = strengths / (excitation * excitation)
    return np.where(np.isfinite(weights) & (excitation > 0), weights, 0.0)


def select_states(excitation: np.ndarray, strengths: np.ndarray, window_ev: tuple[float, float] | None = None,
                  states: list[int] | None = None, stochastic: bool = False, seed: int = 0) -> Selection:
    """Initial (geometry, state) pairs from excitation energies and oscillator strengths (G, K) (column k is state
    k + 1); the criteria combine as described in the module docstring."""
    excitation = np.atleast_2d(np.asarray(excitation, dtype=float))
    strengths = np.atleast_2d(np.asarray(strengths, dtype=float))
    G, K = excitation.shape
    candidate = np.isfinite(excitation) & np.isfinite(strengths)
    criteria = []
    if window_ev is not None:
        low, high = window_ev
        if not low < high:
            raise ConfigurationError(f"the energy window must have low < high, got {low}:{high} eV", where="window")
        candidate &= (excitation >= low * EV_IN_HARTREE) & (excitation <= high * EV_IN_HARTREE)
        criteria.append(f"excitation energy in [{low:g}, {high:g}] eV")
    if states is not None:
        wanted = sorted({int(s) for s in states})
        if not wanted or wanted[0] < 1 or wanted[-1] > K:
            raise ConfigurationError(f"states must be excited states from 1 to {K}, got {list(states)}", where="states")
        mask = np.zeros(K, dtype=bool)
        mask[np.asarray(wanted) - 1] = True
        candidate &= mask[None, :]
        criteria.append("states " + ", ".join(f"S{s}" for s in wanted))
    probability = candidate.astype(float)
    uniforms = np.random.default_rng(seed).random((G, K))
    if stochastic:
        weights = np.where(candidate, delta_pulse_weights(excitation, strengths), 0.0)
        largest = weights.max() if weights.size else 0.0
        if largest <= 0:
            raise ConfigurationError("no candidate with a positive oscillator strength to select by f/dE^2", where="selection")
        probability = weights / largest
        candidate &= uniforms < probability
        criteria.append(f"stochastic f/dE^2 (seed {seed})")
    g, k = np.nonzero(candidate)
    return Selection(g, k + 1, probability[g, k], excitation[g, k], strengths[g, k], "; ".join(criteria) or "all states")
