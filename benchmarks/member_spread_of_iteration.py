"""How much of a campaign iteration's population band is its members' sampling noise.

    python benchmarks/member_spread_of_iteration.py CAMPAIGN_DIR ITERATION [-o OUT.npz] [--store]

Reruns each member of iteration ITERATION's committee alone on that iteration's initial conditions and FSSH seed
(as `exsnn.active.simulate` does; iterations run before the members' active states were recorded keep only their
populations), checks that the rerun gives the recorded member populations, and prints the largest committee spread
and population band over states and times: raw (the standard deviation of the members' populations) and without the
members' sampling noise (`exsnn.active.decide.member_spread`). One thread; about 4 minutes per member for 100
CH2NH2+ trajectories of 200 steps. OUT keeps the rerun's `member_active` (K, T, B) for later analysis; `--store` adds
it to the iteration's populations.npz (and dynamics.npz), as a campaign run today records it, when the rerun gives
exactly the recorded member populations (so that the next iteration's stopping rule compares like with like).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from exsnn.active.campaign import load_oracle, open_campaign
from exsnn.active.decide import classical_populations, member_spread, settled_active
from exsnn.active.layout import save_npz_atomic
from exsnn.active.sample import dynamics_initial_conditions
from exsnn.active.simulate import POPULATIONS_FILE, RECORD_FILE, member_active_states
from exsnn.analysis.populations import one_hot
from exsnn.dynamics.settings import FSSHSettings
from exsnn.errors import DataError, ExsnnError
from exsnn.model.potential import model_files
from exsnn.units import FS_IN_AU_TIME


def rerun(campaign: Path, iteration: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The iteration's stored populations record and its members' active states (K, T, B) from a rerun."""
    _, config = open_campaign(campaign)
    oracle = load_oracle(config)
    folder = campaign / f"iteration_{iteration:03d}"
    if not (folder / POPULATIONS_FILE).is_file() or not (folder / "committee" / "committee.json").is_file():
        raise DataError(folder, POPULATIONS_FILE, "no simulated iteration with a trained committee here")
    with np.load(folder / POPULATIONS_FILE) as data:
        record = {key: data[key] for key in data.files}
    d = config.dynamics
    n_steps = int(round(d.duration_fs / d.dt_fs))
    settings = FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=n_steps, seed=config.run.seed * 1000 + iteration,
                            ground_state_end=None if d.ground_state_end_fs is None else d.ground_state_end_fs * FS_IN_AU_TIME)
    positions, velocities = dynamics_initial_conditions(config, oracle, iteration)
    active = []
    for k, member in enumerate(model_files(folder / "committee")):
        active.append(member_active_states(member, oracle, settings, positions, velocities, d.initial_state))
        print(f"member {k}: rerun", flush=True)
    return record, np.stack(active)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("iteration", type=int)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--store", action="store_true", help="add member_active to the iteration's record files")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        record, active = rerun(args.campaign, args.iteration)
    except ExsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    n_states = int(record["member_populations"].shape[-1]) if "member_populations" in record else int(active.max()) + 1
    rerun_populations = one_hot(active, n_states).mean(axis=2)  # (K, T, N)
    difference = None
    if "member_populations" in record:
        difference = float(np.abs(rerun_populations - record["member_populations"]).max())
        print(f"largest difference from the recorded member populations: {difference:.3g}")
    _, bootstrap = classical_populations(settled_active(record), n_states)
    raw = member_spread({"member_populations": rerun_populations}, n_states)
    corrected = member_spread({"member_populations": rerun_populations, "member_active": active}, n_states)
    assert raw is not None and corrected is not None
    T = min(len(bootstrap), len(raw))
    result = {
        "largest_raw_spread": float(raw[:T].max()), "largest_spread_without_noise": float(corrected[:T].max()),
        "median_raw_spread": float(np.median(raw[:T][raw[:T] > 0])),
        "median_spread_without_noise": float(np.median(corrected[:T][raw[:T] > 0])),
        "band_raw": float(np.sqrt(bootstrap[:T] ** 2 + raw[:T] ** 2).max()),
        "band_without_noise": float(np.sqrt(bootstrap[:T] ** 2 + corrected[:T] ** 2).max()),
        "largest_bootstrap_error": float(bootstrap[:T].max()),
    }
    print(json.dumps(result, indent=1))
    if args.output is not None:
        np.savez_compressed(args.output, member_active=active, **result)
    if args.store:
        if difference != 0.0:
            print("error: not stored: the rerun does not reproduce the recorded member populations", file=sys.stderr)
            sys.exit(2)
        folder = args.campaign / f"iteration_{args.iteration:03d}"
        for name in (POPULATIONS_FILE, RECORD_FILE):
            if (folder / name).exists():
                with np.load(folder / name) as data:
                    stored = {key: data[key] for key in data.files}
                save_npz_atomic(folder / name, compressed=name == POPULATIONS_FILE, **stored, member_active=active)
                print(f"member_active added to {folder / name}")


if __name__ == "__main__":
    main()
