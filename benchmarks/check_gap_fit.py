"""How well trained models fit the gaps between neighbouring states, where surface hopping happens.

For each model and each part of a split (train/val/test): energy MAE per state, MAE of the adjacent gaps
E_(i+1) - E_i, and the gap MAE on the frames whose reference gap is small (below --small, eV), plus the energy MAE in
bands of the S0 energy above its lowest value in the dataset (how far from the ground-state minimum the frame is).

    python benchmarks/check_gap_fit.py DATA.h5 --split SPLIT.npz MODEL.pt [MODEL.pt ...] [--small 0.5] [--json OUT]

A MODEL may also be a Lightning checkpoint of `exsnn train` (OUT/checkpoints/last.ckpt or best.ckpt): its network
weights are read into the configuration of the run's OUT/model.pt (e.g. to compare the last step with the kept one).

Used for the CH2NH2+ campaign data (datasets/ch2nh2_sacasscf/NOTEBOOK.md): a model trained without the gap term
(`exsnn train --gap-weight 0`) predicts 0.7-2.5 eV for S2-S1 gaps that are 0.06-0.41 eV in its own training set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from exsnn.data import read_frames
from exsnn.data.splits import load_split
from exsnn.errors import ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.units import HARTREE_IN_EV

BANDS_EV = ((0.0, 2.0), (2.0, 5.0), (5.0, 8.0), (8.0, np.inf))


def gap_report(model: str, data: Path, split: dict[str, np.ndarray], small_ev: float) -> dict:
    arrays = read_frames(data)
    labelled = np.array([arrays.frame(k).energies is not None for k in range(arrays.n_frames)])
    s0_min = min(arrays.frame(k).energies[0] for k in np.flatnonzero(labelled))
    potential = ModelPotential(model, arrays.frame(0).numbers)
    result: dict[str, dict] = {}
    for part, indices in split.items():
        indices = np.array([k for k in indices if labelled[k]], dtype=int)
        if len(indices) == 0:
            continue
        positions = torch.as_tensor(np.stack([arrays.frame(int(k)).positions for k in indices]))
        predicted = potential.compute(positions).energies.detach().numpy() * HARTREE_IN_EV
        reference = np.stack([arrays.frame(int(k)).energies for k in indices]) * HARTREE_IN_EV
        gap_ref, gap_pred = np.diff(reference, axis=1), np.diff(predicted, axis=1)
        small = gap_ref < small_ev
        above_min = reference[:, 0] - s0_min * HARTREE_IN_EV
        frame_error = np.abs(predicted - reference).mean(axis=1)
        result[part] = {
            "n": int(len(indices)),
            "energy_mae_eV": np.abs(predicted - reference).mean(axis=0).round(4).tolist(),
            "gap_mae_eV": np.abs(gap_pred - gap_ref).mean(axis=0).round(4).tolist(),
            # mean signed gap error near the ground-state minimum (where the dynamics starts) and everywhere
            "gap_bias_near_minimum_eV": (gap_pred - gap_ref)[above_min < 2.0].mean(axis=0).round(4).tolist()
            if (above_min < 2.0).any() else None,
            "gap_bias_eV": (gap_pred - gap_ref).mean(axis=0).round(4).tolist(),
            "small_gaps": {
                f"S{i + 1}-S{i}": {"n": int(small[:, i].sum()),
                                   "reference_eV": gap_ref[small[:, i], i].round(3).tolist(),
                                   "predicted_eV": gap_pred[small[:, i], i].round(3).tolist()}
                for i in range(gap_ref.shape[1])
            },
            "energy_mae_by_S0_band_eV": {
                f"{lo:g}-{hi:g}": {"n": int(m.sum()), "mae": round(float(frame_error[m].mean()), 4)}
                for lo, hi in BANDS_EV
                if (m := (above_min >= lo) & (above_min < hi)).any()
            },
        }
    return result


def model_file(model: str, folder: Path) -> str:
    """`model` itself, or for a Lightning checkpoint a model file in `folder` with the checkpoint's network weights and
    the rest of the run's model.pt (OUT/checkpoints/X.ckpt -> OUT/model.pt)."""
    path = Path(model)
    if path.suffix != ".ckpt":
        return model
    stored = torch.load(path.parents[1] / "model.pt", map_location="cpu", weights_only=False)
    weights = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    stored["state_dict"] = {name.removeprefix("network."): value for name, value in weights.items()
                            if name.startswith("network.")}
    out = folder / f"{path.parents[1].name}_{path.stem}.pt"
    torch.save(stored, out)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--split", type=Path, required=True, help="split.npz of the training runs (train/val/test)")
    parser.add_argument("--small", type=float, default=0.5, help="a reference gap below this (eV) counts as small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = load_split(args.split)
    everything = {}
    with tempfile.TemporaryDirectory(prefix="check_gap_fit_") as folder:  # model files made from checkpoints
        reports = {model: gap_report(model_file(model, Path(folder)), args.data, split, args.small) for model in args.models}
    for model, report in reports.items():
        everything[model] = report
        print(model)
        for part, r in report.items():
            smalls = "; ".join(f"{pair} n={v['n']} mean |pred-ref| "
                               f"{np.abs(np.subtract(v['predicted_eV'], v['reference_eV'])).mean():.2f} eV"
                               for pair, v in r["small_gaps"].items() if v["n"])
            bands = ", ".join(f"{band}: {v['mae']:.3f} (n={v['n']})" for band, v in r["energy_mae_by_S0_band_eV"].items())
            print(f"  {part:5s} n={r['n']:3d} energy MAE {r['energy_mae_eV']} eV, gap MAE {r['gap_mae_eV']} eV, "
                  f"gap bias {r['gap_bias_eV']} eV (within 2 eV of the S0 minimum: {r['gap_bias_near_minimum_eV']})")
            print(f"        small gaps: {smalls or 'none'}")
            print(f"        energy MAE by S0 above its minimum (eV): {bands}")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    try:
        main()
    except (ExsnnError, OSError) as exc:  # a missing or unreadable file: say which, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
