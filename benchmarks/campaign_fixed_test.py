"""Every committee of a campaign on one fixed test set: the campaign's held-out frames as they stand now.

The campaign's own report evaluates each iteration on the test set of its time, which grows with frames from ever
later dynamics, so its rows are not comparable. This evaluates all trained committees on the same frames.

    python benchmarks/campaign_fixed_test.py CAMPAIGN_DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from exsnn.active.campaign import open_campaign
from exsnn.active.export import trained_iterations
from exsnn.active.measure import committee_errors
from exsnn.active.train import campaign_split, committee_folder
from exsnn.data import read_frames
from exsnn.model.potential import ModelPotential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory, config = open_campaign(args.campaign)
    arrays = read_frames(directory.data)
    test = campaign_split(directory.data, seed=0)["test"]
    numbers = arrays.frame(int(test[0])).numbers
    rows = {}
    print(f"{len(test)} held-out frames; MAE of the committee mean")
    print("iteration  energies S0..(meV)        forces S0..(meV/A)        NACs (1/Bohr)")
    for k in trained_iterations(directory.root, config.committee.members):
        errors = committee_errors(ModelPotential(committee_folder(directory.iteration(k)), numbers), arrays, test)
        rows[k] = errors
        fmt = lambda d, f: " / ".join(f % v for v in d.values())  # noqa: E731
        print(f"{k:9d}  {fmt(errors['energies_meV'], '%.0f'):24s}  {fmt(errors['forces_meV_per_A'], '%.0f'):24s}  "
              f"{fmt(errors['nacs_per_bohr'], '%.3f')}")
    if args.json:
        args.json.write_text(json.dumps({"n_test": int(len(test)), "errors": rows}, indent=1))


if __name__ == "__main__":
    main()
