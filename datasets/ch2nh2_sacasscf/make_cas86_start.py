"""Writes cas86_start.xyz, the initial geometries of the SA-4-CASSCF(8,6) campaign (campaign_cas86.toml).

Every geometry the (6,4) campaign labelled through its iteration 16 (the first 620 frames of campaign_sa4/data.h5),
positions only, in Angstrom, each tagged `campaign_sa4_frame=K`. The first 84 stay in the (6,4) campaign's order (they
were labelled at (8,6) in that order before the file was reordered, on 2026-12-07); the other 536 follow in the order
of farthest-point sampling in the campaign's geometry descriptor (sorted interatomic distances,
`exsnn.active.select.descriptor`), starting from the structure farthest from those 84. The campaign's `n_frames` then
takes a diverse subset of the (6,4) geometries rather than the earliest ones.

    python datasets/ch2nh2_sacasscf/make_cas86_start.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exsnn.active.select import descriptor, farthest_points
from exsnn.data import read_frames
from exsnn.units import BOHR_IN_ANGSTROM

HERE = Path(__file__).resolve().parent
N_FRAMES = 620  # the (6,4) campaign's labels through its iteration 16
KEPT_IN_ORDER = 84  # labelled at (8,6) before the reordering


def main() -> None:
    arrays = read_frames(HERE / "campaign_sa4" / "data.h5")
    frames = [arrays.frame(k) for k in range(N_FRAMES)]
    positions = np.array([f.positions for f in frames]) * BOHR_IN_ANGSTROM
    features = descriptor(positions, frames[0].numbers)
    rest = np.arange(KEPT_IN_ORDER, N_FRAMES)
    picked = farthest_points(features[rest], np.arange(len(rest)), len(rest), 0.0, taken=features[:KEPT_IN_ORDER])
    order = list(range(KEPT_IN_ORDER)) + [int(rest[p]) for p in picked]
    assert sorted(order) == list(range(N_FRAMES))
    symbols = {1: "H", 6: "C", 7: "N"}
    lines = []
    for k in order:
        lines += [str(len(frames[k].numbers)), f"campaign_sa4_frame={k}"]
        lines += [f"{symbols[int(z)]:2s} {x:22.15f} {y:22.15f} {w:22.15f}" for z, (x, y, w) in zip(frames[k].numbers, positions[k])]
    (HERE / "cas86_start.xyz").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
