"""Populations of an on-the-fly reference run against a model's run from the same initial conditions.

The reference (e.g. datasets/ch2nh2_sacasscf/on_the_fly/, FSSH directly on SA-CASSCF) runs few trajectories; the
model's run (e.g. `exsnn demo --model FOLDER`) starts its first trajectories from the same initial conditions. At
every `--every` fs up to the reference's last step this prints the classical populations of

* the reference, over its trajectories still running at that time (a trajectory that failed, by energy drift or
  electronic structure, leaves the average from then on; the count is printed);
* the model on the same trajectory ids;
* the model on all its trajectories;

each with its 95% Wilson score interval (a bootstrap gives a zero-width band when all of a few trajectories share
a state), and whether the reference is consistent with the model's whole ensemble: for every state, the exact
two-sided binomial test of the reference's count against the model's population (agree: every p-value >= 0.05).

    .venv/bin/python benchmarks/compare_on_the_fly.py datasets/ch2nh2_sacasscf/on_the_fly/ch2nh2_on_the_fly.h5 \\
        runs/ch2nh2/run.h5 [--every 2.5] [--json OUT.json]

A reference run in several batches (run files whose trajectories started from consecutive initial conditions of the
model's run: the first file's from 0, the next file's from where the first's end, ...) is given as several files
before the model's run file. At each time only the batches that have run that far count.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from scipy.stats import binomtest

from exsnn.analysis.populations import one_hot
from exsnn.analysis.records import FAILED_STATUSES, read_run
from exsnn.errors import ExsnnError


def populations_with_intervals(active: np.ndarray, valid: np.ndarray, n_states: int
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Populations (N,), 95% Wilson score interval (low, high) (N,) each, counts per state (N,) and the number of
    trajectories, over the trajectories with `valid` (B,) true, from their active states (B,)."""
    counts = one_hot(active[valid], n_states).sum(0)
    n = int(valid.sum())
    p, z = counts / n, 1.959963984540054
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return p, np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1), counts, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", nargs="+", help="run file(s) of the on-the-fly reference, batches in the order of "
                                                    "their initial conditions")
    parser.add_argument("model", help="run file of the model's dynamics (its first trajectories from the same starts)")
    parser.add_argument("--every", type=float, default=2.5, help="fs between printed times")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args()
    if not args.every > 0:
        parser.error("--every must be > 0 fs")
    try:
        references, model = [read_run(path) for path in args.reference], read_run(args.model)
    except ExsnnError as exc:  # a missing or malformed run file: the message names it
        print(f"compare_on_the_fly.py: {exc}", file=sys.stderr)
        sys.exit(2)
    N = model.n_states
    if any(r.n_states != N for r in references):
        print("compare_on_the_fly.py: the reference and the model have different numbers of states", file=sys.stderr)
        sys.exit(2)
    first = np.cumsum([0] + [r.n_trajectories for r in references[:-1]])  # model trajectory of each batch's first
    rows = []
    print(f"reference: {references[0].potential}, {sum(r.n_trajectories for r in references)} trajectories in "
          f"{len(references)} batch(es); model: {model.potential}, {model.n_trajectories}")
    print(f"{'t (fs)':>6s} {'running':>7s}  " + "  ".join(f"{f'S{s} ref':>16s} {'same starts':>16s} {'all':>16s}"
                                                        for s in range(N)) + "  agree")
    end = max(r.time_fs[-1] for r in references)
    for t in np.arange(0.0, end + 1e-9, args.every):
        j = int(np.argmin(np.abs(model.time_fs - t)))
        if abs(model.time_fs[j] - t) > 1e-6:
            break
        active, alive, same = [], [], []
        for reference, offset in zip(references, first):
            if reference.time_fs[-1] < t - 1e-6:  # this batch has not run this far yet
                continue
            i = int(np.argmin(np.abs(reference.time_fs - t)))
            active.append(reference.active[i])
            alive.append(~np.isin(reference.status[i], FAILED_STATUSES))
            same.append(offset + np.arange(reference.n_trajectories))
        if not active or not np.concatenate(alive).any():
            break
        ref = populations_with_intervals(np.concatenate(active), np.concatenate(alive), N)
        same_ids = np.concatenate(same)
        model_alive = ~np.isin(model.status[j], FAILED_STATUSES)
        start = populations_with_intervals(model.active[j][same_ids], model_alive[same_ids], N)
        whole = populations_with_intervals(model.active[j], model_alive, N)
        p_values = [float(binomtest(int(ref[3][s]), ref[4], float(np.clip(whole[0][s], 1e-12, 1 - 1e-12))).pvalue)
                    for s in range(N)]
        agree = bool(min(p_values) >= 0.05)
        cells = []
        for s in range(N):
            cells += [f"{p[0][s]:.2f} [{p[1][s]:.2f},{p[2][s]:.2f}]" for p in (ref, start, whole)]
        verdict = f"{'yes' if agree else 'NO'} (p {min(p_values):.1g})"
        print(f"{t:6.1f} {ref[4]:7d}  " + "  ".join(f"{c:>16s}" for c in cells) + f"  {verdict}")
        rows.append({"time_fs": float(t), "reference_running": ref[4], "reference_started": int(len(same_ids)),
                     "reference": ref[0].tolist(), "reference_band": [ref[1].tolist(), ref[2].tolist()],
                     "model_same_starts": start[0].tolist(), "model_all": whole[0].tolist(),
                     "model_all_band": [whole[1].tolist(), whole[2].tolist()], "binomial_p_values": p_values,
                     "agree_within_errors": agree})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"reference": [str(path) for path in args.reference], "model": str(args.model), "rows": rows},
                      handle, indent=1)


if __name__ == "__main__":
    main()
