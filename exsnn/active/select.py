"""Which geometries of an iteration's dynamics get labelled.

1. Candidates: frames of running trajectories whose disagreement exceeds a lower threshold (any measure), and frames
   whose active state lies closer than `gap_ev` to another state (where a hop may happen).
2. Per trajectory, the local maxima in time of the disagreement (relative to the lower thresholds) among its
   candidates, the `per_trajectory` largest of them (not the last frame before the trajectory stopped).
3. Across the whole ensemble, farthest-point sampling in a geometry descriptor (interatomic distances, sorted within
   each pair of elements: invariant to rotation, translation and permutation of like atoms), starting from the most
   uncertain candidate and skipping candidates closer than `min_distance` to one already chosen, until the budget:
   trajectories that cross the same region cost one label, not one each.

With `gap_share` > 0 that share of the budget goes first to the hopping region: farthest-point sampling over every
near-gap frame of the ensemble (not only the per-trajectory disagreement maxima, which near a seam the members often
agree on), seeded by the frames already labelled, so that it picks the near-gap frames farthest from anything the
committee was trained on (near a seam the disagreement says little about novelty, distance does); then the rest as
above, at a distance from those already chosen. Farthest-point sampling over disagreement
maxima alone favours the most distorted structures; on the SO2 LVC test the populations are decided where S2 and S1
come close in the first femtoseconds, and labels there are what brings them to the oracle's.
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


def candidate_scores(record: dict[str, np.ndarray], thresholds: Thresholds,
                     gap_ev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, B) score (disagreement / lower threshold, largest measure; -inf where a trajectory was not running),
    (T, B) candidate mask and (T, B) near-gap mask (running, active state within `gap_ev` of another state)."""
    valid = record["active"] >= 0
    ratio, _ = thresholds.ratios(np.nan_to_num(record["disagreement"], nan=0.0))
    ratio = np.where(valid, ratio, -np.inf)
    energies = record["energies"]
    active = np.clip(record["active"], 0, None)
    own = np.take_along_axis(energies, active[..., None], axis=-1)
    gaps = np.abs(energies - own)
    np.put_along_axis(gaps, active[..., None], np.inf, axis=-1)
    near = np.nan_to_num(gaps.min(axis=-1), nan=np.inf) < gap_ev * EV_IN_HARTREE
    return ratio, valid & ((ratio >= 1.0) | near), valid & near


def local_maxima(score: np.ndarray, candidates: np.ndarray, keep: int) -> list[int]:
    """Indices of the `keep` largest local maxima in time of one trajectory's score (T,) among its candidates."""
    padded = np.concatenate([[-np.inf], score, [-np.inf]])
    peak = (score >= padded[:-2]) & (score >= padded[2:]) & candidates
    steps = np.flatnonzero(peak)
    return sorted(steps[np.argsort(-score[steps], kind="stable")][:keep].tolist())


def farthest_points(features: np.ndarray, order: np.ndarray, budget: int, min_distance: float,
                    taken: np.ndarray | None = None) -> list[int]:
    """Farthest-point sampling over rows of `features`, starting from order[0] (or, given `taken` (K, D) features
    of structures already chosen, from the row farthest from them); rows closer than `min_distance` to a chosen one
    are never chosen. `order` breaks ties (most uncertain first)."""
    if len(features) == 0 or budget < 1:
        return []
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    chosen: list[int] = []
    if taken is not None and len(taken):
        nearest = np.min(np.linalg.norm(features[:, None] - taken[None], axis=-1), axis=1)
    else:
        chosen = [int(order[0])]
        nearest = np.linalg.norm(features - features[chosen[0]], axis=1)
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
           budget: int, labelled: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The selection of one iteration: positions (K, n, 3), trajectory, step, score, active (K,) each, total (K,) (the
    trajectory's total energy, Hartree, when the record has it), and the number of candidates. `labelled` (L, n, 3),
    Bohr: structures already in the dataset, which seed the near-gap share."""
    score, candidates, near = candidate_scores(record, thresholds, config.gap_ev)
    frames = []  # (trajectory, step)
    for b in range(score.shape[1]):
        frames += [(b, t) for t in local_maxima(score[:, b], candidates[:, b], config.per_trajectory)]
    quota = min(budget, int(round(config.gap_share * budget)))
    gap_frames = [(int(b), int(t)) for t, b in zip(*np.nonzero(near))] if quota else []
    if not frames and not gap_frames:
        return {"positions": np.zeros((0, len(numbers), 3)), "trajectory": np.zeros(0, np.int64), "step": np.zeros(0, np.int64),
                "score": np.zeros(0), "candidates": np.array(0)}
    picked: list[tuple[int, int]] = []
    seeds = list(labelled) if labelled is not None else []
    # the hopping region's share first (seeded by the labelled structures), then the rest
    for pool, limit, seeded in ((gap_frames, quota, seeds), (frames, budget, [])):
        done = set(picked)
        pool = [frame for frame in pool if frame not in done]
        room = limit - len(picked)
        if not pool or room < 1:
            continue
        trajectory = np.array([b for b, _ in pool])
        step = np.array([t for _, t in pool])
        known = [record["positions"][t, b] for b, t in picked] + seeded
        taken = descriptor(np.array(known), numbers) if known else None
        order = np.argsort(-score[step, trajectory], kind="stable")
        chosen = farthest_points(descriptor(record["positions"][step, trajectory], numbers), order, room,
                                 config.min_distance, taken)
        picked += [pool[k] for k in chosen]
    trajectory = np.array([b for b, _ in picked], dtype=np.int64)
    step = np.array([t for _, t in picked], dtype=np.int64)
    chosen = {"positions": record["positions"][step, trajectory], "trajectory": trajectory, "step": step,
              "score": score[step, trajectory], "active": record["active"][step, trajectory],
              "candidates": np.array(len(set(frames) | set(gap_frames)))}
    if "total" in record:
        chosen["total"] = record["total"][step, trajectory]
    return chosen
