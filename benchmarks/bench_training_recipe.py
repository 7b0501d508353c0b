"""Training recipes compared by k-fold cross-validation: test MAE per state and pair, spread over folds, committees.

The same network (PaiNN, 64 features x 3 interactions, 20 radial functions, cutoff 10 Bohr by default) is trained on
each fold of each dataset with each recipe of `exsnn.model.training.RECIPES` (a recipe may carry overrides:
`exsnn-v2+weights.forces=8+learning_rate=3e-4`). Fold f is the test set; of the other frames a seeded
`--val-fraction` validates (early stopping, best checkpoint) and the rest trains. Every recipe and member sees the same
splits. Reported per dataset and recipe, mean and standard deviation over folds (a fold's MAE is the mean over the
members it trained: one seed, or each member of a committee, which takes the training seed's noise out of the fold):

* test MAE of energies (meV) and forces (meV/Angstrom) per state, NACs (1/Bohr) per pair, phase-free (the best
  consistent state-sign vector per structure, as exsnn's error table chooses it);
* wall time and optimiser steps per fold.

With `--committee K`, K members (seeds seed..seed+K-1) are trained per fold for the `--committee-recipes`: the MAE of
the committee mean (NAC signs of each member aligned to member 0's first) against a single member (mean over the
members), and the Spearman rank correlation, over the test structures of each fold, between the committee's
disagreement (standard deviation over members, averaged over states/atoms/components) and the committee mean's
actual error, per property.

Datasets: `ch2nh2` (the shared SPaiNN CH2NH2+ set, 99 MR-CISD frames, 3 states) and `so2-lvc` (`--lvc-frames`
Wigner samples of SchNarc's SO2 LVC model at `--lvc-spread` times the harmonic width, fixed seed, exact labels).

Folds run in parallel processes (`--workers`, one torch thread each); every finished fold is appended to
OUTPUT/folds.jsonl and the summary (OUTPUT/summary.json, OUTPUT/summary.md) is rewritten, so a run stopped at
`--deadline` seconds (or killed) keeps what finished, and `--resume` with the same settings runs only the rest.
Budget per fold: `--steps` optimiser steps for every recipe (default: each recipe's own budget), or per recipe with
an override (`spainn+max_steps=6000`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training_recipe.py --folds 5 --steps 300 --width 32 --workers 1

On 16 cores (seen on the device machine: 16 parallel folds of the 64 x 3 network take about 45 ms per step at batch
2, 75 at batch 7 and 120 at batch 16 for CH2NH2+, about half that for SO2), all three recipes with committees of 3
for the default fit about 7 minutes with:

    OMP_NUM_THREADS=1 python benchmarks/bench_training_recipe.py --folds 5 --steps 1200 --committee 3 --workers 16 --deadline 420

Issue #18's comparison on these 2 cores (one worker beside another job; 71 min), each fold about 3 minutes for each
recipe: exsnn-v3 and exsnn-v2 at 2000 steps against SPaiNN's recipe at 5000 (its steps are cheaper: the same wall
time per fold on CH2NH2+, 1.5x on SO2). exsnn-v3 was run as `exsnn-v2+learning_rate=0.001`, the same settings:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training_recipe.py --folds 5 \
        --recipes "exsnn-v3+max_steps=2000,exsnn-v2+max_steps=2000,spainn+max_steps=5000"

CH2NH2+: exsnn-v3 ahead of SPaiNN's recipe on all nine properties, paired over folds (MAE ratios 0.49-0.77, 44 of
45 fold comparisons won), and of exsnn-v2 on 43 of 45. SO2: ahead of SPaiNN's recipe on S0 energies, S2 forces and
the 01 and 12 couplings, not by more than the spread on S1/S2 energies, S0/S1 forces and the (zero) 02 coupling
(ratios 0.40-0.95, single training seeds; one fold's S2 energies 53 meV against 8 for exsnn-v2).

Three exsnn-v3 seeds per fold (the same run resumed with `--resume --committee 3 --committee-recipes
"exsnn-v3+max_steps=2000"`, 45 more minutes), each fold's MAE the mean over its seeds, SPaiNN's recipe still one seed:
SO2 MAE ratios against SPaiNN 0.34-0.89 (every mean below SPaiNN's; folds won 4-5 of 5 per property), ahead by more
than the paired spread on S0 energies and the three couplings, not on S1/S2 energies and the forces (S0 forces 84 +-
13 against 95 +- 15 meV/Angstrom). CH2NH2+: ahead on all nine. The committee of three: mean-prediction MAE 0.57-0.80
of a member's on SO2, 0.85-0.95 on CH2NH2+; disagreement vs error (Spearman over test structures) 0.50 / 0.81 / 0.82
(energies / forces / NACs) on CH2NH2+, 0.63 / 0.77 / 0.92 on SO2.

SPaiNN's recipe with three seeds per fold too (the same run resumed with `--committee-recipes
"exsnn-v2+learning_rate=0.001+max_steps=2000,spainn+max_steps=5000"`, 20 more trainings, 35 minutes on one core
beside a campaign): CH2NH2+ ahead on all nine properties by more than the paired spread (ratios 0.46-0.75, 45 of 45
folds won; S0 energies 77 +- 20 against SPaiNN's 167 +- 42 meV, averaged over the seeds). SO2 ahead by more than the paired
spread on eight of nine (energies 7.5 / 10.7 / 15.3 against 17.6 / 26.9 / 29.4 meV, forces S1 / S2 139 / 128 against
165 / 177 meV/Angstrom, the couplings 0.33-0.42 of SPaiNN's) but not on S0 forces: 84 +- 13 against 86 +- 9
meV/Angstrom (ratio 0.97, 3 of 5 folds won). SPaiNN's committee disagreement ranks its errors worse: Spearman 0.25 /
0.67 / 0.63 (CH2NH2+) and 0.21 / 0.62 / 0.71 (SO2), energies / forces / NACs, against exsnn-v3's 0.50 / 0.81 / 0.82
and 0.63 / 0.77 / 0.92.

Forces weighted 8 instead of 4 (`exsnn-v2+learning_rate=0.001+max_steps=2000+weights.forces=8`, three seeds, the
same folds, resumed into a copy of that run): on SO2 ahead of SPaiNN's recipe on all nine properties, paired and
unpaired (ratios 0.28-0.71; forces 63 / 98 / 107 against 86 / 165 / 177 meV/Angstrom, energies 7.9 / 8.0 / 11.5
meV), and ahead of exsnn-v3 on S0/S1 forces; on CH2NH2+ (four folds, stopped there) the energies lose what the
forces gain: S0 energies 150 +- 25 meV against 77 for exsnn-v3 and 167 for SPaiNN (ratio 0.96, 2 of 4 folds won),
forces 288 / 312 / 409 against 309 / 300 / 435. Not adopted: the weight that wins SO2's S0 forces costs CH2NH2+'s
energies.

Forces weighted 6 (the default since then, `exsnn-v4`), three seeds per fold for both recipes, both datasets, a
fresh run (60 trainings, 58 minutes with two workers on these 2 cores):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training_recipe.py --folds 5 --committee 3 --workers 2 \
        --recipes "exsnn-v2+learning_rate=0.001+max_steps=2000+weights.forces=6,spainn+max_steps=5000" \
        --committee-recipes "exsnn-v2+learning_rate=0.001+max_steps=2000+weights.forces=6,spainn+max_steps=5000"

Ahead of SPaiNN's recipe on all nine properties of both sets by more than the paired fold spread, every one of the
90 fold comparisons won (MAE ratios 0.61-0.78 on CH2NH2+, 0.33-0.85 on SO2). Unpaired (mean difference larger than
either recipe's fold standard deviation) on 14 of 18: not on CH2NH2+ S1 energies (86 +- 43 against 126 +- 29 meV)
and 01 couplings (0.065 +- 0.022 against 0.081 +- 0.020 1/Bohr), nor on SO2 S0 forces (74 +- 17 against 86 +- 13
meV/Angstrom, ratio 0.85, 5 of 5 folds won), where the folds differ more from each other than the recipes do.
Wall time per fold 118 against 144 s (CH2NH2+), 70 against 126 s (SO2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CH2NH2_DB = SHARED / "spainn" / "spainn_ch2nh2+.db"
LVC_TEMPLATE = SHARED / "schnarc" / "lvc_so2_3s" / "LVC.template"
PROPERTIES = ("energies", "forces", "nacs")


# ----------------------------------------------------------------------------------------------------------- data
def refuse(message: str) -> NoReturn:
    """A usage error: the message on stderr, exit status 2 (as exsnn's commands), before anything is written."""
    print(f"bench_training_recipe.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def make_ch2nh2(path: Path, source: Path = CH2NH2_DB) -> None:
    from exsnn.data import append_frames
    from exsnn.data.importers import detect_format, import_file

    imported = import_file(str(source), detect_format(str(source)))
    append_frames(path, imported.frames, imported.metadata, source=str(source))


def make_so2_lvc(path: Path, n_frames: int, spread: float, seed: int, template: Path = LVC_TEMPLATE) -> None:
    from exsnn.data import DatasetMetadata, append_frames
    from exsnn.dynamics.initial_conditions import wigner_harmonic
    from exsnn.potentials.labelling import label_frames
    from exsnn.potentials.lvc import LVCPotential

    potential = LVCPotential(template)
    reference, masses, frequencies, modes = potential.harmonic_modes()
    # widths scale as 1/sqrt(w): `spread` times the harmonic width is the ground state of modes with w / spread^2
    positions, _ = wigner_harmonic(reference, masses, frequencies / spread**2, modes, n_frames, seed=seed)
    frames = label_frames(potential, positions, {"source": "wigner", "spread": spread, "seed": seed})
    append_frames(path, frames, DatasetMetadata(n_states=potential.n_states, method="LVC (SO2, SchNarc parameters)",
                                                program="exsnn bench_training_recipe"))


def prepare_datasets(names: list[str], folder: Path, args: argparse.Namespace) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        if name == "ch2nh2":
            path = folder / "ch2nh2.h5"
            if not path.exists():
                make_ch2nh2(path, Path(args.ch2nh2_db))
        elif name == "so2-lvc":
            path = folder / f"so2_lvc_{args.lvc_frames}_{args.lvc_spread:g}_{args.lvc_seed}.h5"
            if not path.exists():
                make_so2_lvc(path, args.lvc_frames, args.lvc_spread, args.lvc_seed, Path(args.lvc_template))
        else:
            path = Path(name)  # any exsnn dataset
            if not path.exists():
                refuse(f"unknown dataset {name!r}: ch2nh2, so2-lvc or the path of an exsnn HDF5 dataset")
        paths[name] = path
    return paths


def kfold_splits(n_frames: int, folds: int, val_fraction: float, seed: int) -> list[dict[str, np.ndarray]]:
    """Test fold f of a seeded permutation; a seeded val_fraction of the rest validates, the remainder trains."""
    order = np.random.default_rng(seed).permutation(n_frames)
    parts = np.array_split(order, folds)
    splits = []
    for f in range(folds):
        rest = np.concatenate([p for g, p in enumerate(parts) if g != f])
        rest = np.random.default_rng(seed * 1000 + f).permutation(rest)
        n_val = max(1, int(round(val_fraction * len(rest))))
        splits.append({"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]), "test": np.sort(parts[f])})
    return splits


# ----------------------------------------------------------------------------------------------------------- jobs
def parse_recipe(label: str) -> tuple[str, dict[str, Any]]:
    """'exsnn-v2+weights.forces=8+learning_rate=3e-4' -> ('exsnn-v2', {'weights': {'forces': 8.0}, 'learning_rate': 3e-4})."""
    name, *changes = label.split("+")
    overrides: dict[str, Any] = {}
    for change in changes:
        key, _, text = change.partition("=")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if key.startswith("weights."):
            overrides.setdefault("weights", {})[key.split(".", 1)[1]] = value
        else:
            overrides[key] = value
    return name, overrides


@dataclass
class Job:
    dataset: str
    data: str
    recipe: str
    fold: int
    member: int
    split: dict[str, list[int]]
    folder: str
    network: dict[str, Any]
    steps: int | None
    epochs: int | None
    seed: int
    predictions: bool  # return test-fold predictions (committee analysis)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.dataset, self.recipe, self.fold, self.member)


def init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def test_predictions(model_file: Path, data: str, indices: list[int]) -> dict[str, np.ndarray]:
    """Predictions of a saved model on the given frames (energies (B, N), forces (A, N, 3), smooth_nacs/nacs (A, P, 3))."""
    from exsnn.data.torch_data import ExcitedStateTorchDataset, batch_loader
    from exsnn.model.training import load_network

    network = load_network(model_file)
    dtype = next(network.parameters()).dtype
    dataset = ExcitedStateTorchDataset(data, cutoff=network.config.cutoff, indices=np.asarray(indices), dtype=dtype)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batch_loader(dataset, 32, shuffle=False):
        out = network(batch, forces="all")
        for key in ("energies", "forces", "smooth_nacs", "nacs"):
            if key in out:
                parts.setdefault(key, []).append(out[key].detach().double().numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def run_job(job: Job) -> dict[str, Any]:
    """Train one recipe on one fold (one member); the test-fold error table and, if asked, the predictions."""
    import warnings

    from exsnn.data.splits import save_split
    from exsnn.model.network import ArchitectureConfig
    from exsnn.model.training import TrainingConfig, train

    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        save_split({k: np.asarray(v, dtype=np.int64) for k, v in job.split.items()}, folder / "split.npz")
        name, overrides = parse_recipe(job.recipe)
        budget: dict[str, Any] = {}
        if job.steps is not None:
            budget["max_steps"] = job.steps
        if job.epochs is not None:
            budget["max_epochs"] = job.epochs
        config = TrainingConfig(data=job.data, output=str(folder), network=ArchitectureConfig(**job.network), recipe=name,
                                seed=job.seed + job.member, threads=1, progress_bar=False, accelerator="cpu",
                                **{**overrides, **budget})
        result = train(config, resume=False)
        record = {"dataset": job.dataset, "recipe": job.recipe, "fold": job.fold, "member": job.member, "ok": True,
                  "wall_s": time.perf_counter() - start, "steps": result["steps"], "epochs": result["epochs"],
                  "plan": result["plan"], "split": result["split"], "test_errors": result["test_errors"]}
        if job.predictions:
            record["predictions"] = test_predictions(folder / "model.pt", job.data, job.split["test"])
        return record
    except Exception:  # a failed fold is reported, not fatal to the benchmark
        return {"dataset": job.dataset, "recipe": job.recipe, "fold": job.fold, "member": job.member, "ok": False,
                "wall_s": time.perf_counter() - start, "error": traceback.format_exc(limit=8)}


# ----------------------------------------------------------------------------------------------------- committees
def reference_batch(data: str, indices: list[int], cutoff: float) -> dict[str, Any]:
    import torch

    from exsnn.data.torch_data import ExcitedStateTorchDataset

    dataset = ExcitedStateTorchDataset(data, cutoff=cutoff, indices=np.asarray(indices), dtype=torch.float64)
    return dataset.__getitems__(list(range(len(indices))))


def committee_analysis(members: list[dict[str, np.ndarray]], batch: dict[str, Any]) -> dict[str, Any]:
    """Committee-mean vs single-member MAE tables, and per-structure disagreement vs error (Spearman) per property."""
    import torch
    from scipy.stats import spearmanr

    from exsnn.data.phases import best_state_signs, pair_signs
    from exsnn.model.loss import ErrorTable, smooth_reference
    from exsnn.model.phase_free import pair_sign_table, per_sample_pair_errors, phase_free_squared_error

    idx_m = batch["_idx_m"]
    B, N = batch["energies"].shape
    stack = {key: torch.tensor(np.stack([m[key] for m in members])) for key in members[0]}
    has_nacs = "smooth_nacs" in stack and N > 1
    if has_nacs:  # member k's state signs aligned to member 0's per structure (maximal overlap of the couplings)
        for k in range(1, len(members)):
            overlap = torch.zeros((B, stack["smooth_nacs"].shape[2]), dtype=torch.float64)
            overlap.index_add_(0, idx_m, (stack["smooth_nacs"][k] * stack["smooth_nacs"][0]).sum(-1))
            signs = pair_signs(best_state_signs(overlap, N), N)[idx_m][:, :, None]  # (A, P, 1)
            stack["smooth_nacs"][k] *= signs
            stack["nacs"][k] *= signs
    mean = {key: value.mean(0) for key, value in stack.items()}
    committee = ErrorTable(N)
    committee.update(mean, batch)
    singles = []
    for k in range(len(members)):
        table = ErrorTable(N)
        table.update({key: value[k] for key, value in stack.items()}, batch)
        singles.append(table.summary())
    single = {prop: {col: float(np.mean([s[prop]["mae"][col] for s in singles])) for col in singles[0][prop]["mae"]}
              for prop in PROPERTIES if prop in singles[0]}
    # per-structure error of the committee mean and disagreement of the members
    n_atoms = batch["_n_atoms"]
    per_atom_to_frame = lambda x: torch.zeros(B, dtype=torch.float64).index_add_(0, idx_m, x) / n_atoms  # noqa: E731
    error = {"energies": (mean["energies"] - batch["energies"]).abs().mean(1),
             "forces": per_atom_to_frame((mean["forces"] - batch["forces"]).abs().mean((1, 2)))}
    spread = {"energies": stack["energies"].std(0).mean(1), "forces": per_atom_to_frame(stack["forces"].std(0).mean((1, 2)))}
    if has_nacs:
        plus, minus = per_sample_pair_errors(mean["smooth_nacs"], smooth_reference(batch), idx_m, B)
        _, best = phase_free_squared_error(plus, minus, pair_sign_table(N))
        signs = pair_sign_table(N)[best][idx_m][:, :, None].double()
        error["nacs"] = per_atom_to_frame((mean["nacs"] - signs * batch["nacs"]).abs().mean((1, 2)))
        spread["nacs"] = per_atom_to_frame(stack["nacs"].std(0).mean((1, 2)))
    rho = {}
    for prop in error:
        value = spearmanr(spread[prop].numpy(), error[prop].numpy()).statistic if B > 2 else float("nan")
        rho[prop] = None if not np.isfinite(value) else float(value)
    summary = committee.summary()
    return {"committee_mae": {p: summary[p]["mae"] for p in PROPERTIES if p in summary}, "single_mae": single,
            "spearman": rho, "members": len(members)}


# -------------------------------------------------------------------------------------------------------- summary
def spread(values: np.ndarray) -> float:
    """Sample standard deviation over folds (0 for one fold)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(records: list[dict[str, Any]], committees: dict[str, dict[str, Any]], order: list[str] | None = None) -> dict[str, Any]:
    """Mean and standard deviation over folds per dataset, recipe, property and column; a fold's MAE is the mean over
    the members it trained (wall time and steps: its first member's). Recipes come in `order` (the --recipes order,
    whose first is the one `paired` compares with the others), then any others kept from an earlier run."""
    out: dict[str, Any] = {}
    members: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in records:
        if record["ok"]:
            members.setdefault((record["dataset"], record["recipe"], record["fold"]), []).append(record)
    for (dataset, recipe, fold), group in members.items():
        group.sort(key=lambda r: r["member"])
        first = group[0]
        entry = out.setdefault(dataset, {}).setdefault(recipe, {"folds": [], "rows": {}})
        mae = {p: {column: float(np.mean([r["test_errors"][p]["mae"][column] for r in group]))
                   for column in first["test_errors"][p]["mae"]}
               for p in PROPERTIES if p in first["test_errors"]}
        entry["folds"].append({"fold": fold, "wall_s": first["wall_s"], "steps": first["steps"], "epochs": first["epochs"],
                               "batch_size": first["plan"]["batch_size"], "members": len(group), "mae": mae})
    rank = {name: k for k, name in enumerate(order or [])}
    for dataset, recipes in list(out.items()):
        out[dataset] = recipes = dict(sorted(recipes.items(), key=lambda item: rank.get(item[0], len(rank))))
        for entry in recipes.values():
            entry["folds"].sort(key=lambda f: f["fold"])
            for prop in PROPERTIES:
                columns = entry["folds"][0]["mae"].get(prop, {})
                for column in columns:
                    values = np.array([f["mae"][prop][column] for f in entry["folds"]])
                    entry["rows"][f"{prop} {column}"] = {"mean": float(values.mean()), "std": spread(values),
                                                         "folds": values.tolist()}
            for key in ("wall_s", "steps"):
                values = np.array([f[key] for f in entry["folds"]], dtype=float)
                entry[key] = {"mean": float(values.mean()), "std": spread(values)}
    for key, result in committees.items():
        dataset, recipe = key.split("|")[:2]
        entry = out.setdefault(dataset, {}).setdefault(recipe, {"folds": [], "rows": {}})
        entry.setdefault("committee_folds", []).append(result)
    for recipes in out.values():
        for entry in recipes.values():
            folds = entry.get("committee_folds")
            if not folds:
                continue
            rows: dict[str, Any] = {}
            for prop in PROPERTIES:
                for column in folds[0]["committee_mae"].get(prop, {}):
                    c = np.array([f["committee_mae"][prop][column] for f in folds])
                    s = np.array([f["single_mae"][prop][column] for f in folds])
                    rows[f"{prop} {column}"] = {"committee": float(c.mean()), "single": float(s.mean()),
                                                "ratio": float((c / s).mean())}
            rho = {}
            for prop in PROPERTIES:
                values = [f["spearman"].get(prop) for f in folds if f["spearman"].get(prop) is not None]
                if values:
                    rho[prop] = {"mean": float(np.mean(values)), "std": spread(np.array(values)), "folds": values}
            entry["committee"] = {"members": folds[0]["members"], "folds": len(folds), "rows": rows, "spearman": rho}
    return out


def paired(summary: dict[str, Any]) -> dict[str, Any]:
    """The first recipe of each dataset against each other one on the folds both finished: per table row the
    MAE ratio first / other per fold (geometric mean, range, standard deviation of its logarithm), the folds the
    first wins, and whether it is ahead by more than the fold spread, both paired (the mean log ratio below minus
    its standard deviation over folds: errors scale with a fold's difficulty, ratios much less) and unpaired (the
    mean MAE below the other's minus the larger of the two recipes' standard deviations over folds)."""
    out: dict[str, Any] = {}
    for dataset, recipes in summary.items():
        names = [r for r in recipes if recipes[r]["rows"]]
        if len(names) < 2:
            continue
        first = recipes[names[0]]
        for other_name in names[1:]:
            other = recipes[other_name]
            folds = sorted({f["fold"] for f in first["folds"]} & {f["fold"] for f in other["folds"]})
            if not folds:
                continue
            rows = {}
            for row, value in first["rows"].items():
                if row not in other["rows"]:
                    continue
                order_a = [f["fold"] for f in first["folds"]]
                order_b = [f["fold"] for f in other["folds"]]
                a = np.array([value["folds"][order_a.index(k)] for k in folds])
                b = np.array([other["rows"][row]["folds"][order_b.index(k)] for k in folds])
                log_ratio = np.log(a / b)
                rows[row] = {"ratio": float(np.exp(log_ratio.mean())), "ratio_min": float(np.exp(log_ratio.min())),
                             "ratio_max": float(np.exp(log_ratio.max())), "log_ratio_std": spread(log_ratio),
                             "wins": int((a < b).sum()), "folds": len(folds),
                             "ahead_paired": bool(log_ratio.mean() < -spread(log_ratio)) if len(folds) > 1 else False,
                             "ahead_unpaired": bool(a.mean() < b.mean() - max(spread(a), spread(b))) if len(folds) > 1 else False}
            out.setdefault(dataset, {})[f"{names[0]} vs {other_name}"] = rows
    return out


def zero_columns(path: Path) -> list[str]:
    """Table rows whose reference labels vanish in the whole dataset (e.g. the S0-S1 and S0-S2 couplings of SO2's LVC
    model): their MAE only measures how close to zero the model stays."""
    from exsnn.data.properties import state_pairs
    from exsnn.data.store import read_frames

    arrays = read_frames(path)
    if arrays.n_states < 2 or not arrays.masks["nacs"].any():
        return []
    size = np.nan_to_num(np.abs(arrays.nacs)).max(axis=(0, 2))  # (P,)
    return [f"nacs {i}{j}" for (i, j), value in zip(state_pairs(arrays.n_states), size) if value < 1e-12]


def markdown(summary: dict[str, Any], header: str, zero: dict[str, list[str]] | None = None) -> str:
    lines = [header, ""]
    units = {"energies": "meV", "forces": "meV/Angstrom", "nacs": "1/Bohr"}
    for dataset, recipes in summary.items():
        names = [r for r in recipes if recipes[r]["rows"]]
        if not names:
            continue
        folds = {r: len(recipes[r]["folds"]) for r in names}
        seeds = {r: max(f.get("members", 1) for f in recipes[r]["folds"]) for r in names}
        lines += [f"### {dataset}: test MAE, mean +- std over folds ({', '.join(f'{r}: {folds[r]}' for r in names)} folds; "
                  f"a fold's MAE averaged over its members: {', '.join(f'{r}: {seeds[r]}' for r in names)})", "",
                  "| property | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for row in recipes[names[0]]["rows"]:
            prop = row.split()[0]
            cells = []
            best = min(names, key=lambda r: recipes[r]["rows"].get(row, {"mean": np.inf})["mean"])
            for r in names:
                value = recipes[r]["rows"].get(row)
                digits = 4 if prop == "nacs" else 0 if prop == "forces" else 1
                text = "-" if value is None else f"{value['mean']:.{digits}f} +- {value['std']:.{digits}f}"
                cells.append(f"**{text}**" if r == best and len(names) > 1 else text)
            note = ", reference 0 everywhere" if row in (zero or {}).get(dataset, []) else ""
            lines.append(f"| {row} ({units.get(prop, '')}{note}) | " + " | ".join(cells) + " |")
        wall = [recipes[r]["wall_s"] for r in names]
        lines.append("| wall time per fold (s) | " + " | ".join(f"{w['mean']:.0f} +- {w['std']:.0f}" for w in wall) + " |")
        lines.append("| optimiser steps per fold | " + " | ".join(f"{recipes[r]['steps']['mean']:.0f}" for r in names) + " |")
        lines.append("| batch size | " + " | ".join(str(recipes[r]["folds"][0]["batch_size"]) for r in names) + " |")
        lines.append("")
        for comparison, rows in paired({dataset: recipes}).get(dataset, {}).items():
            lines += [f"#### {dataset}: {comparison}, paired over the same folds", "",
                      "| property | MAE ratio (geometric mean over folds) | range over folds | folds won | ahead by more "
                      "than the spread: paired / unpaired |", "|---|---|---|---|---|"]
            for row, v in rows.items():
                note = " (reference 0 everywhere)" if row in (zero or {}).get(dataset, []) else ""
                lines.append(f"| {row}{note} | {v['ratio']:.3f} | {v['ratio_min']:.2f}-{v['ratio_max']:.2f} | "
                             f"{v['wins']}/{v['folds']} | {'yes' if v['ahead_paired'] else 'no'} / "
                             f"{'yes' if v['ahead_unpaired'] else 'no'} |")
            lines.append("")
        for r in names:
            committee = recipes[r].get("committee")
            if not committee:
                continue
            lines += [f"#### {dataset}, {r}: committee of {committee['members']} ({committee['folds']} folds)", "",
                      "| property | committee-mean MAE | single-member MAE | ratio |", "|---|---|---|---|"]
            for row, value in committee["rows"].items():
                lines.append(f"| {row} | {value['committee']:.4g} | {value['single']:.4g} | {value['ratio']:.3f} |")
            lines.append("")
            lines.append("Spearman rank correlation, committee disagreement vs error of the mean, per test structure: "
                         + ", ".join(f"{p} {v['mean']:.2f} +- {v['std']:.2f}" for p, v in committee["spearman"].items()))
            lines.append("")
    return "\n".join(lines)


#: arguments that change what a training computes: a resumed run must have the same (datasets, recipes and committees
#: may grow: the trainings they add run, the others are kept)
RESUME_KEYS = ("folds", "val_fraction", "steps", "epochs", "width", "interactions", "n_rbf", "cutoff", "seed", "ch2nh2_db",
               "lvc_template", "lvc_frames", "lvc_spread", "lvc_seed")


def earlier_records(out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The successful trainings of an earlier run in `out` with the same settings (failed ones run again); the
    file is rewritten with exactly those, so that a torn last line from a killed run goes."""
    folds, summary = out / "folds.jsonl", out / "summary.json"
    if not folds.exists() or not summary.exists():
        return []
    before = json.loads(summary.read_text()).get("arguments", {})
    changed = [key for key in RESUME_KEYS if before.get(key) != getattr(args, key)]
    if changed:
        refuse(f"--resume: {out} was run with other settings ({', '.join(f'--{k.replace('_', '-')}' for k in changed)}); "
               "use another --output")
    records = []
    for line in folds.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("ok"):
            records.append(record)
    folds.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    return records


def hardware() -> dict[str, Any]:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable, "cpu_model": model, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


# ----------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--datasets", default="ch2nh2,so2-lvc", help="comma-separated: ch2nh2, so2-lvc or paths")
    parser.add_argument("--recipes", default="exsnn-v4,spainn,exsnn-v3",
                        help="comma-separated recipe names, each optionally with +key=value overrides")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="of the non-test frames, for validation")
    parser.add_argument("--steps", type=int, help="optimiser steps per fold for every recipe (default: the recipe's budget)")
    parser.add_argument("--epochs", type=int, help="epochs per fold for every recipe (instead of --steps)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--n-rbf", type=int, default=20)
    parser.add_argument("--cutoff", type=float, default=10.0, help="Bohr")
    parser.add_argument("--committee", type=int, default=1, help="members per fold for the committee analysis (1: none)")
    parser.add_argument("--committee-recipes", help="recipes that get committees (default: the first of --recipes)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one torch thread each")
    parser.add_argument("--deadline", type=float, help="seconds: stop then, kill unfinished folds, keep what finished")
    parser.add_argument("--seed", type=int, default=0, help="fold permutation and first member's training seed")
    parser.add_argument("--ch2nh2-db", default=str(CH2NH2_DB), help="the SPaiNN CH2NH2+ database")
    parser.add_argument("--lvc-template", default=str(LVC_TEMPLATE), help="SHARC LVC.template of SO2")
    parser.add_argument("--lvc-frames", type=int, default=100)
    parser.add_argument("--lvc-spread", type=float, default=2.0, help="times the harmonic width of the Wigner sampling")
    parser.add_argument("--lvc-seed", type=int, default=18)
    parser.add_argument("--output", default=str(ROOT / "exsnn-output" / "bench_training_recipe"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished trainings in OUTPUT/folds.jsonl (same settings) and run only the others")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"  # inherited by the workers
    from exsnn.errors import ConfigurationError
    from exsnn.model.training import RECIPES, TrainingConfig

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    for label in recipes:  # fail now, not in every worker
        name, overrides = parse_recipe(label)
        try:
            TrainingConfig(data="-", output="-", recipe=name, **overrides)
        except (ConfigurationError, TypeError) as exc:
            refuse(f"--recipes {label}: {exc} (recipes: {sorted(RECIPES)})")
    committee_recipes = set(args.committee_recipes.split(",") if args.committee_recipes else recipes[:1])
    if args.folds < 2 or args.committee < 1 or args.workers < 1:
        refuse("--folds >= 2, --committee >= 1 and --workers >= 1 are needed")
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in names:
        if name not in ("ch2nh2", "so2-lvc") and not Path(name).exists():
            refuse(f"--datasets: unknown dataset {name!r}: ch2nh2, so2-lvc or the path of an exsnn HDF5 dataset")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    described = {r: RECIPES[parse_recipe(r)[0]].description + (f" (changed: {parse_recipe(r)[1]})" if "+" in r else "")
                 for r in recipes}
    info = {"hardware": hardware(), "arguments": vars(args), "recipes": described}
    print(f"hardware: {info['hardware']['cpu_count']} CPUs ({info['hardware']['usable_cpus']} usable, "
          f"{info['hardware']['cpu_model']}), torch {info['hardware']['torch']}, Python {info['hardware']['python']}; "
          f"{args.workers} workers x 1 thread", flush=True)
    from exsnn.data.store import count_frames

    datasets = prepare_datasets(names, out / "data", args)
    info["zero_reference_columns"] = {name: zero_columns(path) for name, path in datasets.items()}
    network = {"n_atom_basis": args.width, "n_interactions": args.interactions, "n_rbf": args.n_rbf, "cutoff": args.cutoff}
    jobs: list[Job] = []
    splits = {}
    for name, path in datasets.items():
        splits[name] = kfold_splits(count_frames(path), args.folds, args.val_fraction, args.seed)
        print(f"{name}: {path}, {count_frames(path)} frames, {args.folds} folds "
              f"(train/val/test {len(splits[name][0]['train'])}/{len(splits[name][0]['val'])}/{len(splits[name][0]['test'])})", flush=True)
    # fold-major order: every recipe's first folds finish before anybody's last ones (useful partial results)
    for fold in range(args.folds):
        for member in range(args.committee):
            for name, path in datasets.items():
                for recipe in recipes:
                    if member > 0 and recipe not in committee_recipes:
                        continue
                    tag = recipe.replace("+", "_").replace("=", "-")
                    jobs.append(Job(dataset=name, data=str(path), recipe=recipe, fold=fold, member=member,
                                    split={k: v.tolist() for k, v in splits[name][fold].items()},
                                    folder=str(out / "runs" / name / tag / f"fold{fold}" / f"member{member}"), network=network,
                                    steps=args.steps, epochs=args.epochs, seed=args.seed,
                                    predictions=args.committee > 1 and recipe in committee_recipes))
    print(f"{len(jobs)} trainings ({len(datasets)} datasets x {len(recipes)} recipes x {args.folds} folds"
          + (f", committees of {args.committee} for {sorted(committee_recipes)}" if args.committee > 1 else "") + ")", flush=True)
    records: list[dict[str, Any]] = []
    predictions: dict[tuple[str, str, int], dict[int, dict[str, np.ndarray]]] = {}
    committees: dict[str, dict[str, Any]] = {}
    kept = earlier_records(out, args) if args.resume else []
    if not args.resume:
        (out / "folds.jsonl").write_text("")

    def write_summary(final: bool) -> dict[str, Any]:
        summary = aggregate(records, committees, recipes)
        info["elapsed_s"] = time.perf_counter() - started
        info["finished"] = sum(r["ok"] for r in records)
        info["failed"] = sum(not r["ok"] for r in records)
        info["planned"] = len(jobs)
        (out / "summary.json").write_text(json.dumps({**info, "results": summary, "paired": paired(summary)}, indent=1, default=str))
        hw = info["hardware"]
        budget = f"{args.steps} steps" if args.steps else f"{args.epochs} epochs" if args.epochs else "each recipe its own"
        header = (f"## Training recipes, {args.folds}-fold cross-validation ({'final' if final else 'partial'}: "
                  f"{info['finished']}/{len(jobs)} trainings, {info['failed']} failed, {info['elapsed_s']:.0f} s)\n\n"
                  f"PaiNN {args.width} x {args.interactions}, {args.n_rbf} radial functions, cutoff {args.cutoff} Bohr; "
                  f"budget {budget} per fold;\n{hw['cpu_count']} CPUs ({hw['cpu_model']}), torch {hw['torch']}, "
                  f"{args.workers} workers x 1 thread.\n\n"
                  + "\n".join(f"- `{r}`: {d}" for r, d in info["recipes"].items()))
        (out / "summary.md").write_text(markdown(summary, header, info["zero_reference_columns"]) + "\n")
        return summary

    def finished(record: dict[str, Any], replayed: bool = False) -> None:
        prediction = record.pop("predictions", None)
        records.append(record)
        if not replayed:
            with open(out / "folds.jsonl", "a") as handle:
                handle.write(json.dumps(record, default=str) + "\n")
        state = ("kept" if replayed else "ok") if record["ok"] else "FAILED"
        extra = ""
        if record["ok"]:
            mae = record["test_errors"]
            extra = (f"{record['steps']} steps, E {np.mean(list(mae['energies']['mae'].values())):.1f} meV, "
                     f"F {np.mean(list(mae['forces']['mae'].values())):.0f} meV/A"
                     + (f", NAC {np.mean(list(mae['nacs']['mae'].values())):.4f} 1/Bohr" if "nacs" in mae else ""))
        else:
            extra = record["error"].strip().splitlines()[-1]
        print(f"[{time.perf_counter() - started:6.0f} s] {record['dataset']} {record['recipe']} fold {record['fold']} "
              f"member {record['member']}: {state} in {record['wall_s']:.0f} s; {extra}", flush=True)
        if prediction is not None:
            group = (record["dataset"], record["recipe"], record["fold"])
            predictions.setdefault(group, {})[record["member"]] = prediction
            if len(predictions[group]) == args.committee:
                members = [predictions[group][k] for k in range(args.committee)]
                batch = reference_batch(str(datasets[group[0]]), splits[group[0]][group[2]]["test"].tolist(), args.cutoff)
                committees["|".join(map(str, group))] = committee_analysis(members, batch)
                del predictions[group]
        write_summary(final=False)

    done_keys = set()
    for record in kept:  # earlier trainings, replayed (committee members' predictions from their saved models)
        job = next((j for j in jobs if j.key == (record["dataset"], record["recipe"], record["fold"], record["member"])), None)
        if job is None:
            continue
        if job.predictions:
            record["predictions"] = test_predictions(Path(job.folder) / "model.pt", job.data, job.split["test"])
        done_keys.add(job.key)
        finished(record, replayed=True)
    jobs_left = [job for job in jobs if job.key not in done_keys]
    if kept:
        print(f"resumed: {len(done_keys)} trainings kept, {len(jobs_left)} to run", flush=True)
    deadline = None if args.deadline is None else started + args.deadline
    if args.workers == 1 and deadline is None:
        init_worker()
        for job in jobs_left:
            finished(run_job(job))
    else:
        import multiprocessing

        executor = ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=init_worker)
        pending = {executor.submit(run_job, job) for job in jobs_left}
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(future.result())
                if deadline is not None and time.perf_counter() >= deadline and pending:
                    print(f"deadline of {args.deadline:.0f} s reached: {len(pending)} trainings unfinished, stopped", flush=True)
                    break
        finally:
            processes = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # the workers this benchmark started
                if process.is_alive():
                    process.kill()
    summary = write_summary(final=True)
    print(markdown(summary, f"results ({time.perf_counter() - started:.0f} s): {out / 'summary.md'}, {out / 'summary.json'}",
                   info["zero_reference_columns"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
