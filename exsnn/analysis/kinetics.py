"""First-order kinetic networks fitted to populations, with bootstrap errors on every time constant.

A network is a set of irreversible first-order steps i -> j with rate constants k = 1/tau. The populations obey
dP/dt = K P with K[j, i] = k_ij and K[i, i] = -sum_j k_ij, so P(t) = exp(K (t - t0)) P(t0) (Steinfeld, Francisco and
Hase, *Chemical Kinetics and Dynamics*, 2nd ed., 1999, ch. 2). The time constants are fitted by nonlinear least
squares (scipy's trust-region reflective solver on log tau) to every state's population at every time, with P(t0)
taken from the data; several starting points guard against local minima. Errors come from refitting B bootstrap
resamples of the trajectories (the way SHARC's bootstrap_fit does it, here non-interactive and seeded): the standard
deviation and the percentile interval of each tau.

Network specs: steps separated by commas or semicolons, each a chain of states joined by "->": ``"S2->S1->S0"``
(sequential), ``"S2->S1, S2->S0, S1->S0"`` (branching). States are ``S<k>`` or plain indices (0 = ground state).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exsnn.errors import ConfigurationError


@dataclass(frozen=True)
class KineticNetwork:
    """Irreversible first-order steps (source, target) between n_states states."""

    n_states: int
    steps: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigurationError("a kinetic network needs at least one step", where="kinetic model")
        seen = set()
        for source, target in self.steps:
            for state in (source, target):
                if not 0 <= state < self.n_states:
                    raise ConfigurationError(
                        f"state S{state} does not exist (the run has S0 to S{self.n_states - 1})", where="kinetic model"
                    )
            if source == target:
                raise ConfigurationError(f"step S{source}->S{target} goes nowhere", where="kinetic model")
            if (source, target) in seen:
                raise ConfigurationError(f"step S{source}->S{target} is given twice", where="kinetic model")
            seen.add((source, target))

    @property
    def labels(self) -> list[str]:
        return [f"S{i}->S{j}" for i, j in self.steps]

    def rate_matrix(self, rates: np.ndarray) -> np.ndarray:
        """K (N, N) from rate constants (E,) in 1/fs: dP/dt = K P."""
        K = np.zeros((self.n_states, self.n_states))
        for (source, target), k in zip(self.steps, rates):
            K[target, source] += k
            K[source, source] -= k
        return K

    def populations(self, time_fs: np.ndarray, initial: np.ndarray, tau_fs: np.ndarray) -> np.ndarray:
        """P(t) (T, N) for times (T,) in fs from P(time_fs[0]) = initial (N,) and time constants (E,) in fs."""
        K = self.rate_matrix(1.0 / np.asarray(tau_fs, dtype=float))
        elapsed = np.asarray(time_fs, dtype=float) - float(time_fs[0])
        initial = np.asarray(initial, dtype=float)
        values, vectors = np.linalg.eig(K)
        if np.linalg.cond(vectors) < 1e6:  # diagonalisable and well conditioned: exp(K t) = V exp(L t) V^-1
            amplitudes = np.linalg.solve(vectors, initial)
            return np.real((np.exp(np.outer(elapsed, values)) * amplitudes) @ vectors.T)
        from scipy.linalg import expm  # (nearly) equal rate sums: the general matrix exponential

        return expm(K[None] * elapsed[:, None, None]) @ initial


_STATE = re.compile(r"^\s*[sS]?(\d+)\s*$")


def parse_network(spec: str, n_states: int) -> KineticNetwork:
    """'S2->S1->S0' or 'S2->S1, S2->S0, S1->S0' -> KineticNetwork (grammar in the module docstring)."""
    steps: list[tuple[int, int]] = []
    for chain in re.split(r"[,;]", spec):
        if not chain.strip():
            continue
        names = chain.split("->")
        if len(names) < 2:
            raise ConfigurationError(
                f"expected steps such as 'S2->S1', got {chain.strip()!r}", source="kinetic model", where=spec
            )
        states = []
        for name in names:
            match = _STATE.match(name)
            if not match:
                raise ConfigurationError(
                    f"expected a state such as S1 or 1, got {name.strip()!r}", source="kinetic model", where=spec
                )
            states.append(int(match.group(1)))
        steps += list(zip(states[:-1], states[1:]))
    if not steps:
        raise ConfigurationError("no steps given", source="kinetic model", where=spec)
    return KineticNetwork(n_states, tuple(steps))


def sequential_network(initial_state: int, n_states: int) -> KineticNetwork:
    """S_i -> S_(i-1) -> ... -> S0 from the initially populated state i (>= 1)."""
    if initial_state < 1:
        raise ConfigurationError(
            "a sequential model needs an excited initial state (S1 or above)", where="kinetic model"
        )
    return KineticNetwork(n_states, tuple((s, s - 1) for s in range(initial_state, 0, -1)))


@dataclass
class KineticFit:
    """Fitted time constants (E,) in fs, the model populations (T, N), the rms residual; with a bootstrap, the
    standard errors (E,), percentile intervals (E, 2) and how many resamples were fitted."""

    network: KineticNetwork
    tau_fs: np.ndarray
    time_fs: np.ndarray
    model: np.ndarray
    rms: float
    error_fs: np.ndarray | None = None
    interval_fs: np.ndarray | None = None
    confidence: float = 0.95
    n_bootstrap: int = 0
    samples_fs: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """{"S2->S1": {"tau_fs", "error_fs", "interval_fs", "longer_than_run"}, ...} (JSON-able; None where there is
        no bootstrap). longer_than_run: tau exceeds the fitted time span, so the data bound it only loosely."""
        result: dict[str, Any] = {}
        span = float(self.time_fs[-1] - self.time_fs[0])
        for e, label in enumerate(self.network.labels):
            result[label] = {
                "tau_fs": float(self.tau_fs[e]),
                "error_fs": None if self.error_fs is None else float(self.error_fs[e]),
                "interval_fs": None if self.interval_fs is None else [float(x) for x in self.interval_fs[e]],
                "longer_than_run": bool(self.tau_fs[e] > span),
            }
        return result


def _solve(
    network: KineticNetwork,
    time_fs: np.ndarray,
    data: np.ndarray,
    starts: list[np.ndarray],
    bounds: tuple[float, float],
) -> tuple[np.ndarray, float]:
    from scipy.optimize import least_squares

    initial = data[0]

    def residuals(log_tau: np.ndarray) -> np.ndarray:
        return (network.populations(time_fs, initial, np.exp(log_tau)) - data).ravel()

    best: tuple[np.ndarray, float] | None = None
    for start in starts:
        solution = least_squares(
            residuals,
            np.clip(start, bounds[0] + 1e-6, bounds[1] - 1e-6),
            bounds=bounds,
            method="trf",
            x_scale=1.0,
            xtol=1e-10,
            ftol=1e-12,
        )
        if best is None or solution.cost < best[1]:
            best = (solution.x, float(solution.cost))
    assert best is not None
    return np.exp(best[0]), best[1]


def fit_kinetics(
    time_fs: np.ndarray, populations: np.ndarray, network: KineticNetwork, starts: list[np.ndarray] | None = None
) -> KineticFit:
    """Least-squares time constants of `network` for populations (T, N) at times (T,) in fs."""
    time_fs = np.asarray(time_fs, dtype=float)
    populations = np.asarray(populations, dtype=float)
    if populations.shape != (len(time_fs), network.n_states):
        raise ConfigurationError(
            f"populations of shape {populations.shape} for {len(time_fs)} times and {network.n_states} states"
        )
    if len(time_fs) < 3:
        raise ConfigurationError(f"a kinetic fit needs at least 3 times, got {len(time_fs)}", where="populations")
    duration = float(time_fs[-1] - time_fs[0])
    if duration <= 0:
        raise ConfigurationError("a kinetic fit needs increasing times", where="populations")
    E = len(network.steps)
    # time constants from a hundredth of the smallest time step to a thousand times the duration
    step = float(np.min(np.diff(time_fs))) if len(time_fs) > 1 else duration
    bounds = (np.log(max(step, 1e-12) * 1e-2), np.log(duration * 1e3))
    if starts is None:
        guesses = np.log(duration * np.array([0.05, 0.25, 1.0, 4.0]))
        starts = (
            [np.array(c) for c in itertools.product(guesses, repeat=E)] if E <= 3 else [np.full(E, g) for g in guesses]
        )
    tau, cost = _solve(network, time_fs, populations, starts, bounds)
    model = network.populations(time_fs, populations[0], tau)
    return KineticFit(network, tau, time_fs, model, float(np.sqrt(2 * cost / populations.size)))


def bootstrap_kinetics(
    time_fs: np.ndarray,
    per_trajectory: np.ndarray,
    network: KineticNetwork,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> KineticFit:
    """Fit the mean of per_trajectory (T, B, N) (populations of each trajectory: 0/1 active-state indicators or
    |c|^2), then refit n_bootstrap resamples of the trajectories: standard errors and percentile intervals of tau."""
    from exsnn.analysis.populations import bootstrap_counts

    if not 0 < confidence < 1:
        raise ConfigurationError(f"the confidence level must lie between 0 and 1, got {confidence}", where="confidence")
    B = per_trajectory.shape[1]
    if B == 0:
        raise ConfigurationError("no trajectories to fit", where="trajectories")
    fit = fit_kinetics(time_fs, per_trajectory.mean(axis=1), network)
    if n_bootstrap <= 0:
        return fit
    counts = bootstrap_counts(B, n_bootstrap, seed)
    samples = []
    start = [np.log(fit.tau_fs)]
    for row in counts:
        resampled = np.einsum("b,tbn->tn", row, per_trajectory) / B
        samples.append(fit_kinetics(time_fs, resampled, network, starts=start).tau_fs)
    samples_array = np.array(samples)
    tail = 100 * (1 - confidence) / 2
    fit.error_fs = samples_array.std(axis=0, ddof=1)
    fit.interval_fs = np.percentile(samples_array, [tail, 100 - tail], axis=0).T
    fit.confidence = confidence
    fit.n_bootstrap = n_bootstrap
    fit.samples_fs = samples_array
    return fit
