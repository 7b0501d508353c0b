"""`exsnn demo`: the main job on built-in defaults.

`exsnn demo` (or `exsnn demo ch2nh2`): CH2NH2+ photodynamics on the shipped committee (datasets/ch2nh2_sacasscf/):
Wigner sampling of the SA-CASSCF ground-state modes, excitation and absorption spectrum from the committee, surface
hopping from the bright S2 state, populations with bands and fitted S2 and S1 lifetimes (exsnn.workflows.photodynamics).

`exsnn demo tully`:
1. a surface-hopping ensemble on Tully's model 1 at k = 20 a.u. (dynamics/tully1_k20.toml): run file, population
   plot and table, and the reflection/transmission probabilities next to the exact quantum result;
2. the shipped H2O CIS/STO-3G set imported into an exsnn HDF5 dataset, checked, summarised and exported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = PROJECT_ROOT / "datasets" / "h2o_cis_sto3g" / "h2o_cis_sto3g.xyz"
DEFAULT_DYNAMICS = PROJECT_ROOT / "dynamics" / "tully1_k20.toml"
CH2NH2 = PROJECT_ROOT / "datasets" / "ch2nh2_sacasscf"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on the built-in defaults (CH2NH2+ photodynamics)")
    p.add_argument("job", nargs="?", choices=("ch2nh2", "tully"), default="ch2nh2",
                   help="ch2nh2 (default): CH2NH2+ photodynamics on the shipped committee; tully: Tully model 1 vs exact "
                        "and the shipped H2O dataset")
    p.add_argument("--output", default=None, help="folder for the results (default exsnn-output/demo[-tully])")
    p.add_argument("--trajectories", type=int, default=200, help="ch2nh2: number of trajectories (default %(default)s)")
    p.add_argument("--duration", type=float, default=100.0, help="ch2nh2: simulated time, fs (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="ch2nh2: seed of the Wigner sampling and the hops")
    p.add_argument("--model", default=None,
                   help="ch2nh2: another committee or model folder, e.g. one from `exsnn campaign export` "
                        "(default: the shipped datasets/ch2nh2_sacasscf/committee)")
    p.add_argument("--ground-state-end", type=float, default=None, metavar="FS",
                   help="ch2nh2: end a trajectory after FS fs in S0 (SHARC's killafter); it stays in S0 in the populations")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.job == "ch2nh2":
        return run_ch2nh2(args)
    out = Path(args.output or "exsnn-output/demo-tully")
    out.mkdir(parents=True, exist_ok=True)
    written = run_dynamics_part(out)
    written.update(run_data_part(out))
    print("\nexsnn demo wrote:")
    for label, path in written.items():
        print(f"  {label:28s} {path}")
    return 0


def run_ch2nh2(args: argparse.Namespace) -> int:
    import time

    from exsnn.active.export import run_as
    from exsnn.workflows.photodynamics import PhotodynamicsJob, format_lifetimes, format_populations, run_photodynamics

    out = Path(args.output or "exsnn-output/demo")
    spec = args.model or str(CH2NH2 / "committee")
    folder = Path(spec.split(",")[0])  # a spec may carry options: FOLDER,driver=members
    settings = run_as(folder)  # how the campaign ran this committee, for an export (exsnn campaign export)
    options = "" if "," in spec or not settings.get("driver") or settings["driver"] == "mean" else f",driver={settings['driver']}"
    ground_state_end = args.ground_state_end if args.ground_state_end is not None else settings.get("ground_state_end_fs")
    job = PhotodynamicsJob(potential=f"model:{spec}{options}", modes=settings.get("modes") or str(CH2NH2 / "modes.json"),
                           n_trajectories=args.trajectories, duration_fs=args.duration, seed=args.seed,
                           initial_state=settings.get("initial_state", 2), dt_fs=settings.get("dt_fs", 0.5),
                           ground_state_end_fs=ground_state_end,
                           molecule="CH2NH2+",
                           model_name=describe_committee(folder, settings) if not args.model else spec)
    where = f"the model in {spec}" if args.model else f"the shipped {job.model_name} (datasets/ch2nh2_sacasscf)"
    end = "never" if ground_state_end is None else f"after {ground_state_end:g} fs"
    how = (f"; run as its campaign ran it (ORIGIN.json): from S{job.initial_state}, the {settings.get('driver', 'mean')} "
           f"driver, trajectories in S0 end {end}" if settings else "")
    print(f"CH2NH2+ photodynamics on {where}{how}")
    start = time.perf_counter()
    result = run_photodynamics(job, out)
    print("\npopulations (active state; bands in the plot and table):")
    print("\n".join(format_populations(result, result["state_labels"])))
    print("\nlifetimes (sequential first-order fit, bootstrap errors over trajectories):")
    print("\n".join(format_lifetimes(result)))
    print(f"\nexsnn demo wrote ({time.perf_counter() - start:.0f} s):")
    for label, path in result["files"].items():
        print(f"  {label:28s} {path}")
    return 0


def describe_committee(folder: Path, settings: dict) -> str:
    """How plot titles name the shipped committee: its members and the oracle of its campaign."""
    import json

    members = len(json.loads((folder / "committee.json").read_text()).get("members", [])) if (folder / "committee.json").exists() else 0
    oracle = str(settings.get("oracle", "SA-3-CASSCF(6,4)/6-31G*"))
    if oracle.startswith("pyscf:"):  # pyscf:casscf(6,4)/6-31g*,states=4,...: SA-4-CASSCF(6,4)/6-31G*
        method, _, rest = oracle[len("pyscf:"):].partition(",")
        states = next((part.split("=")[1] for part in rest.split(",") if part.startswith("states=")), "")
        oracle = (f"SA-{states}-" if states else "") + method.upper()
    return f"committee of {members} PaiNN models, {oracle} labels"


def run_dynamics_part(out: Path) -> dict[str, str]:
    import tomllib

    from exsnn.analysis.report import analyze_run
    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.ensemble import run_ensemble
    from exsnn.potentials.tully import TULLY_MODELS
    from exsnn.validation.wavepacket import exact_scattering

    config_path = out / DEFAULT_DYNAMICS.name
    config_path.write_text(DEFAULT_DYNAMICS.read_text().replace('file = "tully1_k20.h5"', 'file = "tully1_k20_run.h5"'))
    config = load_config(config_path)
    summary = run_ensemble(config, overwrite=True, progress=False)
    momentum = tomllib.loads(config.text)["initial_conditions"]["momentum"]
    print(
        f"FSSH on Tully model 1, k = {momentum:g} a.u., {config.n_trajectories} trajectories, "
        f"{summary.steps} steps ({summary.time_fs:.0f} fs)"
    )
    print(
        f"  hops: {summary.hops} accepted, {summary.frustrated_hops} frustrated; trajectories: {summary.status_counts}"
    )
    import h5py
    import numpy as np

    with h5py.File(summary.output) as h5:  # the checkpoint holds the final ensemble state
        x = h5["checkpoint/positions"][:, 0, 0]
        active = h5["checkpoint/active"][()]
    n = len(active)
    fssh = {
        "T_lower": np.mean((x > 0) & (active == 0)),
        "T_upper": np.mean((x > 0) & (active == 1)),
        "R_lower": np.mean((x < 0) & (active == 0)),
        "R_upper": np.mean((x < 0) & (active == 1)),
    }
    exact = exact_scattering(TULLY_MODELS["tully1"], momentum).as_dict()
    print("  outcome     FSSH            exact (split-operator wavepacket)")
    errors = {key: float(np.sqrt(max(p * (1 - p), 1 / n) / n)) for key, p in fssh.items()}
    for key in ("T_lower", "T_upper", "R_lower", "R_upper"):
        print(f"  {key:9s}  {fssh[key]:.3f} +/- {errors[key]:.3f}   {exact[key]:.3f}")
    written = {"surface-hopping run (HDF5)": summary.output}
    outcomes = out / "tully1_k20_outcomes.png"
    plot_outcomes(fssh, errors, exact, outcomes,
                  f"Tully model 1, k = {momentum:g} a.u.: FSSH ({n} trajectories, from the lower state) vs exact")
    written["outcome plot (vs exact)"] = str(outcomes)
    analysis = analyze_run(summary.output, out / "tully1_k20", kinetic_model="none", n_bootstrap=500,
                           title=f"Tully model 1, k = {momentum:g} a.u.: {n} FSSH trajectories from the lower adiabat\n"
                                 "(bands: 95% trajectory bootstrap)", state_labels=["lower adiabat", "upper adiabat"])
    written["population plot"] = analysis["files"]["population plot"]
    written["population table"] = analysis["files"]["population table"]
    return written


def plot_outcomes(fssh: dict[str, float], errors: dict[str, float], exact: dict[str, float], png: Path, title: str) -> None:
    """Scattering outcome probabilities: FSSH with binomial 2-sigma error bars beside the exact wavepacket values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("T_lower", "T_upper", "R_lower", "R_upper")
    names = ("transmitted,\nlower state", "transmitted,\nupper state", "reflected,\nlower state", "reflected,\nupper state")
    x = list(range(len(keys)))
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    axis.bar([k - 0.18 for k in x], [fssh[k] for k in keys], width=0.36, yerr=[2 * errors[k] for k in keys], capsize=4,
             color="tab:blue", label="FSSH (exsnn), 2-sigma binomial error")
    axis.bar([k + 0.18 for k in x], [exact[k] for k in keys], width=0.36, color="tab:orange", label="exact wavepacket")
    axis.set_xticks(x, names)
    axis.set_ylabel("probability")
    axis.set_ylim(0, 1.05)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)


def run_data_part(out: Path) -> dict[str, str]:
    from exsnn.data.exporters import export_spainn_db
    from exsnn.data.importers import import_file
    from exsnn.data.store import append_frames, read_frames, read_metadata
    from exsnn.data.summary import format_summary, summarize

    dataset = out / "h2o_dataset.h5"
    dataset.unlink(missing_ok=True)
    imported = import_file(DEFAULT_DATASET)
    append_frames(dataset, imported.frames, imported.metadata, source=str(DEFAULT_DATASET))
    arrays, metadata = read_frames(dataset), read_metadata(dataset)
    print()
    print(format_summary(summarize(arrays, metadata), str(dataset)))
    spainn = out / "h2o_dataset_spainn.db"
    export_spainn_db(arrays, metadata, spainn, overwrite=True)
    return {"H2O dataset (HDF5)": str(dataset), "H2O dataset (SPaiNN db)": str(spainn)}
