"""Seam loops of a campaign: where the oracle's states intersect, labelled on loops around, and each iteration's check.

After the initial set (`[seam] pair = [i, j]`), from each of the `loops` initial frames with the smallest oracle gap
of the pair (at least 2 radii apart), a few oracle calls find the intersection (`locate_intersection`), and `points`
oracle labels on a circle of `radius` Bohr in its branching plane are appended with a `seam_loop` provenance tag
(`exsnn.data.seam_loops`). They are training labels like any other; with `[committee] seam_loop_weight` they also
feed the seam-loop term, which pulls quasi-diabatic members' states to turn around the loop as the oracle's do (issue
#14; it cannot carry a member whose states touch across to the crossing kind, hence the retraining below).

Every iteration then checks each member: the integral of its coupling around each loop, against the oracle's from
its labels (+-pi with an intersection inside, 0 without; `exsnn.analysis.geometric_phase`). A member that touches
where the oracle crosses gives the wrong populations through the seam however small its errors elsewhere, so the
campaign does not call itself converged while a member disagrees.

Labelling is idempotent like the rest of the campaign: the search is repeated on resume (it is deterministic, and
loop frames are never starting points) and the loop points already labelled are skipped.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exsnn.active.config import CampaignConfig, SeamConfig
from exsnn.active.label import label_structures
from exsnn.active.layout import write_atomic_text
from exsnn.active.train import SEAM_RETRAINS_FILE, committee_folder, seam_retrains, train_committee
from exsnn.analysis.geometric_phase import ENCLOSES_ABOVE, locate_intersection, loop_integral, loop_positions
from exsnn.data import DatasetMetadata, read_frames
from exsnn.data.properties import state_pairs
from exsnn.data.seam_loops import SEAM_LOOP, read_seam_loops, seam_loop_tag
from exsnn.errors import ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.model.training import MODEL_FILE
from exsnn.potentials.base import Potential
from exsnn.units import HARTREE_IN_EV

#: tag indices of loop labels (iteration 0): loop L, point k -> SEAM_INDEX + 1000 L + k, apart from the initial frames
SEAM_INDEX = 1_000_000
SEAM_CHECK_FILE = "seam_check.json"


def seam_starts(data: Path, pair: tuple[int, int], n: int, separation: float) -> list[np.ndarray]:
    """Positions (n_atoms, 3) Bohr of up to `n` labelled frames with the smallest gap E_j - E_i, each at least
    `separation` Bohr from the ones before; frames on loops and failed labels are never starts."""
    arrays = read_frames(data)
    i, j = pair
    records = [json.loads(text) if text else {} for text in arrays.provenance]
    usable = [k for k, r in enumerate(records)
              if seam_loop_tag(r) is None and not r.get("failure") and arrays.masks["energies"][k]]
    gaps = np.array([arrays.energies[k, j] - arrays.energies[k, i] for k in usable])
    starts: list[np.ndarray] = []
    for k in np.array(usable)[np.argsort(gaps, kind="stable")]:
        x = arrays.frame(int(k)).positions
        if all(np.linalg.norm(x - y) >= separation for y in starts):
            starts.append(x)
        if len(starts) == n:
            break
    return starts


def label_seam_loops(data: Path, oracle: Potential, config: CampaignConfig, metadata: DatasetMetadata,
                     say: Any = None) -> list[dict[str, Any]]:
    """Find and label the `[seam]` loops (see module docstring); return one summary per loop."""
    s = config.seam
    pair = (int(s.pair[0]), int(s.pair[1]))
    say = say or (lambda message: None)
    summaries = []
    for loop, start in enumerate(seam_starts(data, pair, s.loops, 2 * s.radius)):
        found = locate_intersection(oracle, start, pair, tolerance_ev=s.tolerance_ev, max_calls=s.search_calls)
        positions = loop_positions(found.center, found.plane[0], found.plane[1], s.radius, s.points)
        tags = [{"iteration": 0, "index": SEAM_INDEX + 1000 * loop + k, "kind": "seam_loop", "split": "train",
                 SEAM_LOOP: {"loop": loop, "point": k, "pair": list(pair)}} for k in range(s.points)]
        new = label_structures(data, oracle, torch.as_tensor(positions), tags, metadata, config.oracle.batch)
        say(f"seam loop {loop}: S{pair[0]}/S{pair[1]} gap {found.gap_ev * 1000:.1f} meV after {found.calls} oracle calls "
            f"({'converged' if found.converged else 'not converged'}), {new} of {s.points} loop points labelled now")
        summaries.append({"loop": loop, "gap_ev": found.gap_ev, "calls": found.calls, "converged": found.converged})
    return summaries


def loop_geometry(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (n, 3) Bohr of a loop's evenly spaced points (K, n, 3) and the plane they span, (2, 3n) orthonormal rows."""
    center = positions.mean(axis=0)
    plane = np.linalg.svd((positions - center).reshape(len(positions), -1), full_matrices=False)[2][:2]
    return center, plane


def member_seam_shift(member: Potential, center: np.ndarray, plane: np.ndarray, pair: tuple[int, int],
                      seam: SeamConfig) -> tuple[float | None, float]:
    """Where a member's own intersection lies: searched from the oracle's (`center`, Bohr) with the campaign's
    tolerance and calls, its distance (Bohr) from it within the oracle's branching plane (`plane`, (2, 3n)), None when
    the member's gap does not close there; and the smallest gap the search reached (eV). A search step at which the
    member has no branching plane (its coupling parallel to its gradient difference) ends the search unclosed."""
    out = member.compute(torch.as_tensor(center[None]), nacs=False)
    gap = float(out.energies[0, pair[1]] - out.energies[0, pair[0]]) * HARTREE_IN_EV
    if gap < seam.tolerance_ev:
        return 0.0, gap
    try:
        own = locate_intersection(member, center, pair, tolerance_ev=seam.tolerance_ev, max_calls=seam.search_calls)
    except ExsnnError:
        return None, gap
    shift = float(np.linalg.norm(plane @ (own.center - center).reshape(-1)))
    return (shift if own.converged else None), own.gap_ev


def check_seams(data: Path, committee: Path, numbers: np.ndarray, seam: SeamConfig | None = None) -> dict[str, Any] | None:
    """Each member against the oracle on each labelled loop; None without loops. A member agrees on a loop when
    (1) its coupling integral around the loop encloses an intersection (|integral| > pi/2) exactly when the oracle's
    does, and (2) where the oracle's does, the member's own intersection, searched from the oracle's (the loop's
    centre), closes to `[seam] tolerance_ev` within `max_shift` Bohr of it in the branching plane. (2) catches a
    member whose seam passes inside the loop but off the oracle's, or whose states only come close: both change the
    S_j -> S_i transfer though the integral agrees (issue #14: SO2, seed 4)."""
    seam = seam or SeamConfig()
    loops = read_seam_loops(data)
    if not loops:
        return None
    arrays = read_frames(data)
    files = sorted(committee.glob(f"member_*/{MODEL_FILE}"), key=lambda p: int(p.parent.name.split("_")[1]))
    members = [ModelPotential(file, numbers, dtype=torch.float64) for file in files]  # loaded once for every loop
    results = []
    for loop in loops:
        positions = np.stack([arrays.frame(int(k)).positions for k in loop.frames])
        center, plane = loop_geometry(positions)
        column = state_pairs(arrays.n_states).index(loop.pair)
        oracle = float(loop.integral)
        encloses = abs(oracle) > ENCLOSES_ABOVE
        integrals, gaps, shifts, seam_gaps = [], [], [], []
        for member in members:
            out = member.compute(torch.as_tensor(positions), nacs=True)
            integrals.append(loop_integral(positions, out.nacs[:, column].numpy())[0])  # type: ignore[index]
            gaps.append(float((out.energies[:, loop.pair[1]] - out.energies[:, loop.pair[0]]).min()) * HARTREE_IN_EV)
            shift, seam_gap = member_seam_shift(member, center, plane, loop.pair, seam) if encloses else (None, None)
            shifts.append(shift)
            seam_gaps.append(seam_gap)
        agree = [(abs(m) > ENCLOSES_ABOVE) == encloses and (not encloses or (s is not None and s <= seam.max_shift))
                 for m, s in zip(integrals, shifts)]
        results.append({"loop": loop.loop, "pair": list(loop.pair), "oracle_rad": oracle, "members_rad": integrals,
                        "members_smallest_gap_ev": gaps, "members_seam_shift_bohr": shifts,
                        "members_seam_gap_ev": seam_gaps, "max_shift_bohr": seam.max_shift, "agree": agree})
    return {"loops": results, "all_agree": all(all(r["agree"]) for r in results), "retrains": seam_retrains(committee)}


def disagreeing_members(check: dict[str, Any]) -> list[int]:
    """Members that disagree with the oracle on some loop (integral or seam position)."""
    return [k for k in range(len(check["loops"][0]["agree"])) if not all(r["agree"][k] for r in check["loops"])]


def retrain_disagreeing(data: Path, iteration_dir: Path, earlier: Sequence[Path] | None, config: CampaignConfig,
                        iteration: int, numbers: np.ndarray, say: Any = None) -> dict[str, int]:
    """Retrain from scratch, with a new seed each time, the members whose seams disagree with the oracle's, up to
    `[seam] retrains` times each; return the attempts per member. Killed at any point, a resumed campaign ends with
    the same members: a member is removed before its attempt is recorded, and a recorded attempt fixes its seed."""
    say = say or (lambda message: None)
    committee = committee_folder(iteration_dir)
    while (check := check_seams(data, committee, numbers, config.seam)) is not None:
        attempts = seam_retrains(committee)
        todo = [k for k in disagreeing_members(check) if attempts.get(str(k), 0) < config.seam.retrains]
        if not todo:
            return attempts
        for k in todo:
            shutil.rmtree(committee / f"member_{k}")
            attempts[str(k)] = attempts.get(str(k), 0) + 1
            write_atomic_text(committee / SEAM_RETRAINS_FILE, json.dumps(attempts))
            say(f"iteration {iteration}: member {k}'s S{check['loops'][0]['pair'][0]}/S{check['loops'][0]['pair'][1]} "
                f"seam disagrees with the oracle's: retraining it from scratch (attempt {attempts[str(k)]} of "
                f"{config.seam.retrains})")
        train_committee(data, iteration_dir, earlier, config, iteration)
    return {}


def _shift_text(shift: float | None) -> str:
    return " (own seam does not close)" if shift is None else f" (own seam {shift:.3f} Bohr off)"


def seam_line(check: dict[str, Any]) -> str:
    """One report line: per loop the oracle's integral, the members' and where their own seams lie (those that
    disagree marked)."""
    parts = []
    for r in check["loops"]:
        shifts = r.get("members_seam_shift_bohr") or [None] * len(r["agree"])
        encloses = abs(r["oracle_rad"]) > ENCLOSES_ABOVE
        members = ", ".join(f"{m:+.2f}" + (_shift_text(s) if encloses else "") + ("" if ok else " (disagrees)")
                            for m, s, ok in zip(r["members_rad"], shifts, r["agree"]))
        parts.append(f"loop {r['loop']} (S{r['pair'][0]}/S{r['pair'][1]}): oracle {r['oracle_rad']:+.2f} rad, members {members}")
    verdict = "all members agree with the oracle" if check["all_agree"] else "NOT all members agree: not converged"
    retrained = check.get("retrains") or {}
    again = ("; retrained from scratch for disagreeing: " + ", ".join(f"member {k} {n}x" for k, n in sorted(retrained.items()))
             if retrained else "")
    return f"- seam check ({verdict}): " + "; ".join(parts) + again
