"""Accuracy of a committee where its own dynamics goes: fresh reference labels at geometries of a run file.

Geometries: `--hops` exact hop geometries (`/hops/positions`, where the couplings matter most) and `--random` frames
drawn from the recorded snapshots of the trajectories that did not fail (seeded). Each is labelled by the reference
method (a `pyscf:` spec, e.g. the campaign's oracle) through `exsnn.parallel` (`--executor local:2` uses two cores),
written to an exsnn dataset (resumable: geometries already labelled are skipped), and the committee's predictions
are compared: MAE per state for energies (meV) and forces (meV/Angstrom), per pair for NACs (1/Bohr, phase-free: the
state-sign vector that fits best per frame), separately for hop and random geometries. Prints a table and writes JSON.

With `--recorded` the run itself is the reference (an on-the-fly run, e.g. datasets/ch2nh2_sacasscf/on_the_fly/): the
committee is compared with the energies the run recorded at its geometry snapshots, along the reference's own paths,
and no new labels are computed.

    exsnn demo --output runs/ch2nh2                      # the shipped model's own trajectories
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_model_accuracy.py runs/ch2nh2/run.h5 \\
        --model datasets/ch2nh2_sacasscf/committee \\
        --reference "pyscf:casscf(6,4)/6-31g*,states=3,charge=1,avas=C 2p;N 2p" --hops 30 --random 70 \\
        --executor local:2 -o runs/ch2nh2/accuracy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from exsnn.active.label import label_structures, labelled_tags, oracle_metadata
from exsnn.active.measure import committee_errors
from exsnn.analysis.records import read_run
from exsnn.data import read_frames
from exsnn.dynamics.state import RUNNING
from exsnn.errors import ExsnnError
from exsnn.model.potential import ModelPotential
from exsnn.potentials.spec import load_potential
from exsnn.units import HARTREE_IN_EV


def pick_geometries(run: Path, n_hops: int, n_random: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Positions (K, n, 3) Bohr and a kind per geometry ("hop" or "random")."""
    records = read_run(run)
    rng = np.random.default_rng(seed)
    chosen, kinds = [], []
    hop_positions = records.hops.get("positions")
    if n_hops and hop_positions is not None and len(hop_positions):
        accepted = np.flatnonzero(~records.hops["frustrated"].astype(bool))
        pool = accepted if len(accepted) else np.arange(len(hop_positions))
        for k in rng.choice(pool, min(n_hops, len(pool)), replace=False):
            chosen.append(hop_positions[k])
            kinds.append("hop")
    if n_random and len(records.positions):
        # snapshots (g, b) of trajectories that did not fail, taken while they ran: a trajectory that ended early
        # (e.g. relaxed to S0) keeps its last geometry in the later snapshots, which would weigh it again
        record = np.clip(np.searchsorted(records.step, records.geometry_step) - 1, 0, None)  # (G,) the record before
        ran = (records.status[record] == RUNNING) & (records.geometry_step > 0)[:, None]  # (G, B)
        ran &= ~records.failed()[None, :]
        ran &= np.isfinite(records.positions).all(axis=(2, 3))
        pool = np.argwhere(ran)
        for g, b in pool[rng.choice(len(pool), min(n_random, len(pool)), replace=False)]:
            chosen.append(records.positions[g, b])
            kinds.append("random")
    return np.array(chosen), kinds


def compare_recorded(run: Path, model_path: str) -> dict[str, dict[str, float]]:
    """MAE (meV) per state of the committee's energies against the energies recorded by an on-the-fly run, at every
    geometry snapshot of every trajectory while it was running."""
    records = read_run(run)
    model = ModelPotential(model_path, records.numbers, dtype=torch.float64)
    index = {int(s): k for k, s in enumerate(records.step)}
    positions, reference = [], []
    for g, step in enumerate(records.geometry_step):
        k = index.get(int(step))
        if k is None:
            continue
        for b in range(records.positions.shape[1]):
            if records.status[k, b] == 0 and np.all(np.isfinite(records.energies[k, b])):
                positions.append(records.positions[g, b])
                reference.append(records.energies[k, b])
    predicted = model.compute(torch.as_tensor(np.array(positions)), nacs=False).energies.numpy()
    errors = np.abs(predicted - np.array(reference)) * HARTREE_IN_EV * 1000
    return {"n": {"geometries": float(len(positions))},
            "energies_meV": {f"S{s}": float(errors[:, s].mean()) for s in range(errors.shape[1])},
            "energies_max_meV": {f"S{s}": float(errors[:, s].max()) for s in range(errors.shape[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run file of the model's own dynamics (exsnn demo / exsnn dynamics)")
    parser.add_argument("--model", required=True, help="model or committee folder")
    parser.add_argument("--reference", help="reference potential spec (pyscf:...)")
    parser.add_argument("--recorded", action="store_true", help="compare with the run's own recorded energies")
    parser.add_argument("--hops", type=int, default=30)
    parser.add_argument("--random", type=int, default=70)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="serial", help="serial, local[:N], dask-local[:N] (PySCF labelling)")
    parser.add_argument("-o", "--output", required=True, help="folder: reference.h5 (resumable) and accuracy.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.recorded and not args.reference:
        parser.error("--reference is needed unless --recorded")
    out = Path(args.output)
    try:  # the run file, the model and the reference are read before anything is written
        numbers = read_run(Path(args.run)).numbers
        ModelPotential(args.model, numbers, dtype=torch.float64)
        if args.recorded:
            table = compare_recorded(Path(args.run), args.model)
        else:
            positions, kinds = pick_geometries(Path(args.run), args.hops, args.random, args.seed)
            spec = args.reference if args.executor == "serial" else f"{args.reference},executor={args.executor}"
            reference = load_potential(spec, Path.cwd(), "cpu", numbers=numbers)
    except ExsnnError as exc:
        parser.exit(2, f"check_model_accuracy.py: error: {exc}\n")
    out.mkdir(parents=True, exist_ok=True)
    if args.recorded:
        print(json.dumps(table, indent=1))
        (out / "accuracy_recorded.json").write_text(json.dumps(table, indent=1) + "\n")
        return
    data = out / "reference.h5"
    tags = [{"iteration": 0, "index": k, "kind": kind} for k, kind in enumerate(kinds)]
    print(f"{len(positions)} geometries ({kinds.count('hop')} at hops, {kinds.count('random')} random); "
          f"{len(labelled_tags(data))} already labelled in {data}")
    label_structures(data, reference, torch.as_tensor(positions), tags, oracle_metadata(reference, args.reference), 4)

    arrays = read_frames(data)
    records = [json.loads(p) for p in arrays.provenance]
    model = ModelPotential(args.model, numbers, dtype=torch.float64)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for kind in ("hop", "random", "all"):
        rows = np.array([k for k, r in enumerate(records) if "failure" not in r and (kind == "all" or r["campaign"]["kind"] == kind)])
        if len(rows):  # the campaign's own error measure: per state, NACs phase-free per frame
            result[kind] = {"n": {"geometries": float(len(rows))}, **committee_errors(model, arrays, rows)}
    for kind, table in result.items():
        print(f"\n{kind} geometries ({int(table['n']['geometries'])}):")
        for key, values in table.items():
            if key != "n":
                print(f"  {key:18s} " + "  ".join(f"{k} {v:8.3f}" for k, v in values.items()))
    (out / "accuracy.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out / 'accuracy.json'}")


if __name__ == "__main__":
    main()
