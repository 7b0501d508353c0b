"""Relabel the frames of a SA-CASSCF campaign whose stored label is not the lowest state average.

Until 2026-12-05 the labeller started SA-CASSCF from the AVAS orbitals alone. Where the molecule is strongly
distorted, the projection onto C 2p;N 2p can take a sigma orbital into the active space, and SA-CASSCF then
converges to a higher solution (13 of the 30 labels from the SA-4 campaign's first dynamics, up to 0.42 Hartree in
the state sum). The labeller now also starts from the default window and keeps the lower state average
(`exsnn.qm.casscf`). This script:

1. screens every labelled frame: RHF + SA-CASSCF energies from the default window (`window_state_average`, about a
   second each) against the stored state average;
2. relabels, with the campaign's oracle (energies, gradients, NACs, dipoles), each frame where the window converges
   lower by more than `--tolerance` Hartree;
3. writes the dataset again in the same frame order (atomically: a new file renamed over the old one); a relabelled
   frame keeps its campaign tag and gains "relabelled" in its provenance.

    python datasets/ch2nh2_sacasscf/relabel_lower_solutions.py datasets/ch2nh2_sacasscf/campaign_sa4 [--dry-run]

Run it while the campaign is not running. Committees trained before it keep their old training set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from exsnn.active.campaign import load_oracle, open_campaign
from exsnn.active.label import oracle_frames
from exsnn.active.retry import rewrite_frames
from exsnn.data import read_frames
from exsnn.errors import ExsnnError
from exsnn.qm.casscf import window_state_average
from exsnn.qm.settings import parse_qm_spec

NOTE = "relabelled 2026-12-05: the stored SA-CASSCF solution was not the lowest state average (AVAS start only)"


def main() -> None:
    try:
        relabel()
    except ExsnnError as exc:  # a wrong folder or a damaged dataset: say what and where, change nothing
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def relabel() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="Hartree, on the state average")
    parser.add_argument("--dry-run", action="store_true", help="screen only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    directory, config = open_campaign(args.campaign)
    spec = config.oracle_spec()
    settings = parse_qm_spec(spec.split(":", 1)[1])
    arrays = read_frames(directory.data)
    higher = []
    for k in range(arrays.n_frames):
        frame = arrays.frame(k)
        if frame.energies is None:
            continue
        window = window_state_average(frame.numbers, frame.positions, settings)
        stored = float(np.mean(frame.energies))
        if window is not None and window < stored - args.tolerance:
            higher.append(k)
            print(f"frame {k}: stored state average {stored:.6f}, default window {window:.6f} Hartree", flush=True)
    print(f"{len(higher)} of {arrays.n_frames} frames hold a higher solution")
    if args.dry_run or not higher:
        return
    oracle = load_oracle(config)
    frames = arrays.frames()
    for k in higher:
        old = frames[k]
        new = oracle_frames(oracle, torch.as_tensor(old.positions)[None], [old.provenance["campaign"]])[0]
        new.provenance = {**old.provenance, **{key: value for key, value in new.provenance.items() if key != "campaign"},
                          "relabelled": NOTE}
        frames[k] = new
        state = "failed" if new.energies is None else f"state average now {float(np.mean(new.energies)):.6f}"
        print(f"frame {k}: relabelled ({state})", flush=True)
    rewrite_frames(directory.data, frames)
    print(f"wrote {directory.data}")


if __name__ == "__main__":
    main()
