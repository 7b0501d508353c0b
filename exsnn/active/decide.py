"""Populations with bands, and the rules that end a campaign.

Classical populations P_s(t) (fraction of trajectories in state s) over the trajectories still running at t (a
trajectory stopped for uncertainty leaves the average from then on); the band is the standard error from a bootstrap
over trajectories. The campaign has converged when, at iteration i >= 1,

* at least `finished_fraction` of the trajectories reached the end without crossing an upper threshold, and
* |P_i(t) - P_{i-1}(t)| <= c sqrt(se_i(t)^2 + se_{i-1}(t)^2) for every state and time, where se combines the
  trajectory bootstrap with the committee spread (the standard deviation of the members' own populations, when the
  iteration ran them, without their own sampling noise: `member_spread`, `population_bands`), and c makes the band
  simultaneous over all states and times (the sup-t band: Montiel Olea and Plagborg-Moller, J. Appl. Econometrics
  34, 1 (2019)): the quantile, at the coverage of +-z standard errors of one normal variable (0.954 for z = 2), of
  the largest standardised difference of the two iterations' bootstrap replicates, and never below z. With c = z at
  every one of ~100 correlated comparisons (3 states x 41 times), two 200-trajectory ensembles on the same exact
  potential (SO2 LVC) were called different in 8 of 20 pairs; `[stopping] simultaneous = false` restores that
  pointwise rule.

With `[stopping] kinetics` (a kinetic network such as "S2->S1->S0") the time constants fitted to the populations of
the two iterations must also agree: |tau_i - tau_(i-1)| <= z sqrt(e_i^2 + e_(i-1)^2) for every step, where e combines
the bootstrap error of the fit (trajectories resampled, `exsnn.analysis.kinetics.bootstrap_kinetics`) with the spread
of the time constants fitted to each member's own populations. A fit pools every time, so it can resolve a change of
lifetime that each time's populations alone leave within their bands (a test: tau 10 against 14 fs, 100
trajectories), and it states the agreement in the quantity a photochemist reports. Trajectories stopped for
uncertainty are left out of the fit (they lack its later times); the rule needs >= `finished_fraction` of them to have
finished anyway.

With `[seam]` loops (`exsnn.active.seam`) every member's coupling integral around each loop must also agree with the
oracle's (an intersection inside or none): a member whose states touch where the oracle's cross sends trajectories
the wrong way through the seam, and a committee whose members all do so agrees with itself.

Otherwise it stops when the label budget or the iteration limit is spent (the report then says it did not converge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from exsnn.active.config import StoppingConfig
from exsnn.analysis.kinetics import KineticNetwork, bootstrap_kinetics, fit_kinetics, parse_network
from exsnn.dynamics.state import RELAXED, UNCERTAIN


def classical_populations(active: np.ndarray, n_states: int, n_bootstrap: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """P (T, N) and its bootstrap standard error (T, N) from active states (T, B), -1 where not running."""
    p, samples = bootstrap_populations(active, n_states, n_bootstrap, seed)
    return p, samples.std(axis=0)


def bootstrap_populations(active: np.ndarray, n_states: int, n_bootstrap: int = 200, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """P (T, N) from active states (T, B), -1 where not running, and its bootstrap replicates (n_bootstrap, T, N)
    (trajectories resampled with replacement)."""
    valid = active >= 0
    onehot = (active[..., None] == np.arange(n_states)) & valid[..., None]  # (T, B, N)

    def mean(rows: np.ndarray) -> np.ndarray:
        counts = valid[:, rows].sum(axis=1)[:, None]
        return onehot[:, rows].sum(axis=1) / np.maximum(counts, 1)

    B = active.shape[1]
    rng = np.random.default_rng(seed)
    samples = np.stack([mean(rng.integers(0, B, B)) for _ in range(n_bootstrap)])
    return mean(np.arange(B)), samples


def settled_active(record: dict[str, np.ndarray]) -> np.ndarray:
    """Active states (T, B) of the record, with the trajectories that ended as RELAXED kept in S0 after their end
    (the record has -1 there, as for every ended trajectory)."""
    active = np.array(record["active"], copy=True)
    relaxed = np.asarray(record["status"])[-1] == RELAXED
    if relaxed.any():
        valid = active >= 0
        last = len(active) - 1 - np.argmax(valid[::-1], axis=0)  # (B,) last recorded step
        after = (np.arange(len(active))[:, None] > last[None, :]) & relaxed[None, :]
        active[after] = 0
    return active


def member_spread(record: dict[str, np.ndarray], n_states: int) -> np.ndarray | None:
    """The committee spread of the populations (T, N): the standard deviation over members of the populations each
    member gives driving the ensemble alone, None when the members did not run alone.

    With the members' active states per trajectory (`member_active`, (K, T, B)) it is the spread of the members'
    expected populations, without their sampling noise: each member's B trajectories give its population only to
    about sqrt(p (1 - p) / B), so K members that differ by nothing that matters still scatter by that much (0.05 at
    p = 0.5 and B = 100) once their trajectories decorrelate, which members of a chaotic, stochastic dynamics do
    within a few fs. The members run the same initial conditions, so the trajectories pair them: per state and time
    the indicators a_kb (member k, trajectory b) are a two-way table without replication, a_kb = mu + alpha_k +
    beta_b + e_kb, and the member variance is the method-of-moments estimate max(0, (MS_members - MS_residual) / B)
    (random-effects two-way ANOVA: Searle, Casella and McCulloch, Variance Components, Wiley 1992, section 4.4).
    Records without `member_active` give the raw standard deviation of `member_populations` (noise included)."""
    members = record.get("member_populations")
    if members is None or len(members) < 2:
        return None
    active = record.get("member_active")
    if active is None:
        return np.asarray(members).std(axis=0, ddof=1)
    active = np.asarray(active)
    K, _, B = active.shape
    spread = []
    for state in range(n_states):  # one state at a time: (K, T, B) indicators, not (K, T, B, N)
        a = (active == state).astype(float)
        by_member = a.mean(axis=2, keepdims=True)  # (K, T, 1)
        grand = by_member.mean(axis=0, keepdims=True)
        ms_members = B * ((by_member - grand) ** 2).sum(axis=0)[:, 0] / (K - 1)  # (T,)
        residual = a - by_member - a.mean(axis=0, keepdims=True) + grand
        ms_residual = (residual**2).sum(axis=(0, 2)) / ((K - 1) * (B - 1)) if B > 1 else np.zeros_like(ms_members)
        spread.append(np.sqrt(np.maximum(ms_members - ms_residual, 0.0) / B))
    return np.stack(spread, axis=1)


def population_bands(record: dict[str, np.ndarray], n_states: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """P (T, N), the combined standard error sqrt(bootstrap^2 + members^2) (T, N), and the committee spread alone
    (`member_spread`, T, N; None when the members did not run alone)."""
    p, se = classical_populations(settled_active(record), n_states)
    spread = member_spread(record, n_states)
    if spread is None:
        return p, se, None
    spread = spread[: len(p)]
    return p, np.sqrt(se**2 + spread**2), spread


def lifetime_bands(record: dict[str, np.ndarray], network: KineticNetwork, n_bootstrap: int = 100
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Time constants (E,) in fs fitted to the populations of the trajectories that ran to the end, and their
    standard errors (E,): bootstrap over those trajectories combined with the spread of the members' own fits (when
    the iteration ran them). None with fewer than 2 finished trajectories."""
    active = settled_active(record)
    finished = active[-1] >= 0
    if finished.sum() < 2:
        return None
    indicators = (active[:, finished, None] == np.arange(network.n_states)).astype(float)  # (T, B', N)
    fit = bootstrap_kinetics(record["time_fs"], indicators, network, n_bootstrap=n_bootstrap)
    assert fit.error_fs is not None
    error = fit.error_fs
    members = record.get("member_populations")
    if members is not None and len(members) >= 2:
        taus = np.array([fit_kinetics(record["time_fs"], m[: len(record["time_fs"])], network,
                                      starts=[np.log(fit.tau_fs)]).tau_fs for m in members])
        error = np.sqrt(error**2 + taus.std(axis=0, ddof=1) ** 2)
    return fit.tau_fs, error


def simultaneous_critical_value(now: np.ndarray, before: np.ndarray, z: float) -> float:
    """c of the module docstring from the bootstrap replicates (n_bootstrap, T, N) of two iterations' populations
    (compared over their common times): the quantile at coverage erf(z / sqrt 2) over replicates of the largest
    |(P*_i - P_i) - (P*_(i-1) - P_(i-1))| / sqrt(se_i^2 + se_(i-1)^2) over states and times (cells without spread left
    out), at least z."""
    T = min(now.shape[1], before.shape[1])
    deviations = [(samples[:, :T] - samples[:, :T].mean(axis=0)) for samples in (now, before)]
    scale = np.sqrt(now[:, :T].var(axis=0) + before[:, :T].var(axis=0))
    cells = scale > 1e-12
    if not cells.any():
        return z
    standardised = np.abs(deviations[0] - deviations[1])[:, cells] / scale[cells]
    return max(z, float(np.quantile(standardised.max(axis=1), math.erf(z / math.sqrt(2)))))


@dataclass
class Decision:
    stop: str | None  # None: go on; else "converged", "label budget" or "iteration limit"
    finished_fraction: float
    population_gap: float | None  # max over states and times of |dP| - z se (<= 0: consistent)
    max_population_change: float | None
    population_band: float | None = None  # max over states and times of this iteration's combined standard error
    lifetimes: dict[str, Any] | None = None  # [stopping] kinetics: {"S2->S1": {"tau_fs", "error_fs", "longer_than_run"}}
    lifetime_gap_fs: float | None = None  # max over steps of |d tau| - z e (<= 0: consistent)
    seams_agree: bool | None = None  # [seam] loops: every member's coupling integral agrees with the oracle's (None: no loops)
    population_critical: float | None = None  # c: standard errors that |dP| may reach (z, or the simultaneous band's)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def finished_fraction(status: np.ndarray) -> float:
    """Fraction of trajectories (final status (B,)) that were not stopped for uncertainty."""
    return float((status != UNCERTAIN).mean())


def decide(record: dict[str, np.ndarray], previous: dict[str, np.ndarray] | None, n_states: int, iteration: int,
           labels_spent: int, config: StoppingConfig, seams_agree: bool | None = None) -> Decision:
    """Whether the campaign stops after this iteration's dynamics, and why (`seams_agree` False: a member's states
    do not intersect where the oracle's do, `exsnn.active.seam`, so the campaign has not converged)."""
    fraction = finished_fraction(record["status"][-1])
    gap = change = critical = None
    p, se, _ = population_bands(record, n_states)
    band = float(se.max())
    if previous is not None:
        q, se_q, _ = population_bands(previous, n_states)
        T = min(len(p), len(q))
        difference = np.abs(p[:T] - q[:T])
        change = float(difference.max())
        critical = config.z
        if config.simultaneous:
            critical = simultaneous_critical_value(
                bootstrap_populations(settled_active(record), n_states, seed=0)[1],
                bootstrap_populations(settled_active(previous), n_states, seed=1)[1], config.z)
        gap = float((difference - critical * np.sqrt(se[:T] ** 2 + se_q[:T] ** 2)).max())
    lifetimes = lifetime_gap = None
    lifetimes_agree = True
    if config.kinetics:
        network = parse_network(config.kinetics, n_states)
        now = lifetime_bands(record, network)
        if now is not None:
            span = float(record["time_fs"][-1] - record["time_fs"][0])
            lifetimes = {label: {"tau_fs": float(tau), "error_fs": float(e), "longer_than_run": bool(tau > span)}
                         for label, tau, e in zip(network.labels, *now)}
        before = lifetime_bands(previous, network) if previous is not None else None
        if now is not None and before is not None:
            lifetime_gap = float((np.abs(now[0] - before[0]) - config.z * np.hypot(now[1], before[1])).max())
        lifetimes_agree = lifetime_gap is not None and lifetime_gap <= 0
    details = {"population_band": band, "lifetimes": lifetimes, "lifetime_gap_fs": lifetime_gap, "seams_agree": seams_agree,
               "population_critical": critical}
    # converged: the populations are known (narrow bands), unchanged within them, and the dynamics was trusted; bands
    # wide enough to contain any change would otherwise let a committee that is unsure everywhere "converge"
    if (gap is not None and gap <= 0 and fraction >= config.finished_fraction and band <= config.max_band
            and lifetimes_agree and seams_agree is not False):
        return Decision("converged", fraction, gap, change, **details)
    if labels_spent >= config.label_budget:
        return Decision("label budget", fraction, gap, change, **details)
    if iteration + 1 >= config.max_iterations:
        return Decision("iteration limit", fraction, gap, change, **details)
    return Decision(None, fraction, gap, change, **details)
