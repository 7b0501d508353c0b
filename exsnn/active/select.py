"""Which geometries of an iteration's dynamics get labelled.

1. Candidates: frames of running trajectories whose disagreement exceeds a lower threshold (any measure), and frames
   whose active state lies closer than `gap_ev` to another state (where a hop may happen).
2. Per trajectory, the local maxima in time of the disagreement (relative to the lower thresholds) among its
   candidates, the `per_trajectory` largest of them (not the last frame before the trajectory stopped).
3. Across the whole ensemble, farthest-point sampling in a geometry descriptor (interatomic distances, sorted within
   each pair of elements: invariant to rotation, translation and permutation of like atoms), starting from the most
   uncertain candidate and skipping candidates closer than `min_distance` to one already chosen, until the budget:
   trajectories that cross the same region cost one label, not one each.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from exsnn.active.config import SelectionConfig
from exsnn.active.measure import Thresholds
from exsnn.units import EV_IN_HARTREE


def descriptor(positions: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """(K, D) interatomic distances (Bohr) of structures (K, n, 3), sorted within each element pair class."""
    pairs = list(combinations(range(len(numbers)), 2))
    distances = np.stack([np.linalg.norm(positions[:, i] - positions[:, j], axis=-1) for i, j in pairs], axis=1)
    classes: dict[tuple[int, int], list[int]] = {}
    for column, (i, j) in enumerate(pairs):
        classes.setdefault(tuple(sorted((int(numbers[i]), int(numbers[j])))), []).append(column)
    return np.concatenate([np.sort(distances[:, columns], axis=1) for _, columns in sorted(classes.items())], axis=1)


def candidate_scores(record: dict[str, np.ndarray], thresholds: Thresholds, gap_ev: float) -> tuple[np.ndarray, np.ndarray]:
    """(T, B) score (disagreement / lower threshold, largest measure; -inf where a trajectory was not running) and
    (T, B) candidate mask."""
    valid = record["active"] >= 0
    ratio, _ = thresholds.ratios(np.nan_to_num(record["disagreement"], nan=0.0))
    ratio = np.where(valid, ratio, -np.inf)
    energies = record["energies"]
    active = np.clip(record["active"], 0, None)
    own = np.take_along_axis(energies, active[..., None], axis=-1)
    gaps = np.abs(energies - own)
    np.put_along_axis(gaps, active[..., None], np.inf, axis=-1)
    near = np.nan_to_num(gaps.min(axis=-1), nan=np.inf) < gap_ev * EV_IN_HARTREE
    return ratio, valid & ((ratio >= 1.0) | near)


def local_maxima(score: np.ndarray, candidates: np.ndarray, keep: int) -> list[int]:
    """Indices of the `keep` largest local maxima in time of one trajectory's score (T,) among its candidates."""
    padded = np.concatenate([[-np.inf], score, [-np.inf]])
    peak = (score >= padded[:-2]) & (score >= padded[2:]) & candidates
    steps = np.flatnonzero(peak)
    return sorted(steps[np.argsort(-score[steps], kind="stable")][:keep].tolist())


def farthest_points(features: np.ndarray, order: np.ndarray, budget: int, min_distance: float) -> list[int]:
    """Farthest-point sampling over rows of `features`, starting from order[0]; rows closer than `min_distance` to a
    chosen one are never chosen. `order` breaks ties (most uncertain first)."""
    if len(features) == 0 or budget < 1:
        return []
    chosen = [int(order[0])]
    nearest = np.linalg.norm(features - features[chosen[0]], axis=1)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    while len(chosen) < budget:
        far = nearest.max()
        if far < max(min_distance, 1e-12):
            break
        best = np.flatnonzero(nearest == far)
        pick = int(best[np.argmin(rank[best])])
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[pick], axis=1))
    return chosen


def select(record: dict[str, np.ndarray], numbers: np.ndarray, thresholds: Thresholds, config: SelectionConfig,
           budget: int) -> dict[str, np.ndarray]:
    """The selection of one iteration: positions (K, n, 3), trajectory, step, score, near_gap flag (K,) each."""
    score, candidates = candidate_scores(record, thresholds, config.gap_ev)
    frames = []  # (trajectory, step)
    for b in range(score.shape[1]):
        frames += [(b, t) for t in local_maxima(score[:, b], candidates[:, b], config.per_trajectory)]
    if not frames:
        return {"positions": np.zeros((0, len(numbers), 3)), "trajectory": np.zeros(0, np.int64), "step": np.zeros(0, np.int64),
                "score": np.zeros(0), "candidates": np.array(0)}
    trajectory = np.array([b for b, _ in frames])
    step = np.array([t for _, t in frames])
    positions = record["positions"][step, trajectory]
    values = score[step, trajectory]
    order = np.argsort(-values, kind="stable")
    chosen = farthest_points(descriptor(positions, numbers), order, budget, config.min_distance)
    return {"positions": positions[chosen], "trajectory": trajectory[chosen], "step": step[chosen], "score": values[chosen],
            "candidates": np.array(len(frames))}
