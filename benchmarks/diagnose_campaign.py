"""Why a campaign's populations miss the oracle's (issue #14): three diagnostics on an exact oracle (SO2 LVC).

    python benchmarks/diagnose_campaign.py populations CAMPAIGN_DIR [--last] [--members] [--nac-epsilon 1e-5]
        [--driver mean|members|hamiltonian]
        max|dP| and S1 at the end, against FSSH on the oracle, of each iteration's committee (and members), the
        committee driving as the campaign's [dynamics] driver says or as --driver says
    python benchmarks/diagnose_campaign.py crossing CAMPAIGN_DIR MODEL [MODEL ...]
        along oracle trajectories, at frames with an oracle S2-S1 gap < 0.3 eV: |cos| of model and oracle d12, the ratio
        of their sizes, the gap error and the ratio of sum |d12 . v| (the coupling that makes the hops)
    python benchmarks/diagnose_campaign.py seam CAMPAIGN_DIR MODEL [MODEL ...] [--states 1 2] [--span 60]
        the intersection seam of two states, oracle against models: the oracle's normal mode along which the states
        couple at the reference geometry (the largest projection of d * gap), its point of smallest gap on a grid over
        the other modes (the seam), and on a line through that point across the seam the gap of each and, for
        potentials with state vectors (diabatic heads), whether the diabatic states cross there. Energies, forces and
        sign-free NACs cannot tell a crossing from diabatic states that touch without crossing (d12 only changes sign),
        but FSSH can: through the touching kind the coupling reverses and the S2 -> S1 transfer is lost; and so does
        the geometric phase: the coupling integral around a loop about the oracle's seam point (`--loop-radius`, in the
        oracle's branching plane) is +-pi where the states intersect inside the loop and 0 where they only touch
    python benchmarks/diagnose_campaign.py decompose CAMPAIGN_DIR [--iteration N]
        whether a committee's population error comes from its surfaces or its couplings: each member of the last (or
        N-th) iteration's committee driving alone, its energies and forces with the oracle's NACs (and state vectors),
        and the oracle's energies and forces with its NACs
    python benchmarks/diagnose_campaign.py retrain CAMPAIGN_DIR OUT [--members 2] [--weight nacs=4] [--energy-cap-ev 6.5]
        [--recipe R] [--epochs N] [--patience N] [--width F] [--leave-out-lowest-above EV] [--leave-out-gap-below EV [--gap-pair I,J]]
        members trained from scratch on the campaign's labels (its first-iteration settings and split), and their
        populations against the oracle; the leave-out options take training and validation frames out by where they
        lie (the lowest state's energy above the dataset's lowest energy, or the smallest gap between adjacent states)

The oracle reference and its initial conditions are those of `bench_campaign.py` (0 K Wigner, a dedicated seed;
`--trajectories`, default 300); one thread.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import model_populations, oracle_reference, populations_on  # noqa: E402
from bench_population_ceiling import MixedPotential  # noqa: E402

from exsnn.active.campaign import open_campaign  # noqa: E402
from exsnn.active.config import committee_architecture  # noqa: E402
from exsnn.active.train import campaign_split  # noqa: E402
from exsnn.analysis.geometric_phase import geometric_phase, potential_branching_plane  # noqa: E402
from exsnn.data.properties import state_pairs  # noqa: E402
from exsnn.data.splits import save_split  # noqa: E402
from exsnn.data.store import read_frames  # noqa: E402
from exsnn.dynamics.fssh import FSSHEngine  # noqa: E402
from exsnn.dynamics.settings import FSSHSettings  # noqa: E402
from exsnn.errors import ConfigurationError, ExsnnError  # noqa: E402
from exsnn.model.potential import DRIVERS, ModelPotential  # noqa: E402
from exsnn.model.training import RECIPES, TrainingConfig, train  # noqa: E402
from exsnn.potentials.spec import load_potential  # noqa: E402
from exsnn.units import FS_IN_AU_TIME, HARTREE_IN_EV  # noqa: E402


def report(name: str, populations: np.ndarray, reference: np.ndarray, dt_fs: float | None = None) -> None:
    """max|dP| over states and times (with `dt_fs`: where, time and state), and S1 at the end against the oracle."""
    difference = np.abs(populations - reference)
    step, state = np.unravel_index(int(np.argmax(difference)), difference.shape)
    where = f" at {step * dt_fs:g} fs in S{state}" if dt_fs is not None else ""
    print(f"{name}: max|dP| {difference.max():.3f}{where}, S1 at the end {populations[-1, 1]:.2f} "
          f"(oracle {reference[-1, 1]:.2f})", flush=True)


def populations(args: argparse.Namespace) -> None:
    config, oracle, ics, reference = oracle_reference(str(args.campaign), args.trajectories)
    iterations = sorted(args.campaign.glob("iteration_*"))
    for folder in iterations[-1:] if args.last else iterations:
        models = [folder / "committee"] + (sorted((folder / "committee").glob("member_*")) if args.members else [])
        for model in models:
            potential = ModelPotential(model, oracle.numbers.numpy(), dtype=torch.float64,
                                       driver=args.driver or config.dynamics.driver)
            for network in potential.networks:
                network.config.nac_epsilon = args.nac_epsilon or network.config.nac_epsilon
            report(f"{folder.name} {model.name}", populations_on(potential, *ics, config), reference, config.dynamics.dt_fs)


def decompose(args: argparse.Namespace) -> None:
    iterations = sorted(args.campaign.glob("iteration_*/committee/committee.json"))
    if args.iteration is not None:
        iterations = [c for c in iterations if c.parent.parent.name == f"iteration_{args.iteration:03d}"]
    if not iterations:
        raise ConfigurationError("no trained committee there", source=str(args.campaign), where="--iteration")
    committee = iterations[-1].parent
    config, oracle, ics, reference = oracle_reference(str(args.campaign), args.trajectories)
    for member in sorted(committee.glob("member_*")):
        alone = ModelPotential(member, oracle.numbers.numpy(), dtype=torch.float64)
        for label, potential in (("alone", alone), ("its surfaces + oracle NACs", MixedPotential(alone, oracle)),
                                 ("oracle surfaces + its NACs", MixedPotential(oracle, alone))):
            report(f"{committee.parent.name} {member.name} {label}", populations_on(potential, *ics, config), reference,
                   config.dynamics.dt_fs)


def crossing(args: argparse.Namespace) -> None:
    config, oracle, ics, _ = oracle_reference(str(args.campaign), args.trajectories)
    d = config.dynamics
    n_steps = int(round(d.duration_fs / d.dt_fs))
    engine = FSSHEngine(oracle, FSSHSettings(dt=d.dt_fs * FS_IN_AU_TIME, n_steps=n_steps, seed=1))
    state = engine.initial_state(*ics, torch.full((len(ics[0]),), d.initial_state))
    positions, velocities = [], []
    while state.step < n_steps:
        engine.step(state)
        if state.step % 2 == 0:  # every 1 fs at 0.5 fs steps
            positions.append(state.positions.clone())
            velocities.append(state.velocities.clone())
    P, V = torch.cat(positions), torch.cat(velocities)
    truth = oracle.compute(P, nacs=True)
    gap = (truth.energies[:, 2] - truth.energies[:, 1]) * HARTREE_IN_EV
    near = gap < 0.3
    pair = 2  # pairs 01, 02, 12
    for model in args.models:
        out = ModelPotential(model, oracle.numbers.numpy(), dtype=torch.float64).compute(P, nacs=True)
        a, b = out.nacs[:, pair].reshape(len(P), -1), truth.nacs[:, pair].reshape(len(P), -1)
        cos = (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1))
        model_gap = (out.energies[:, 2] - out.energies[:, 1]) * HARTREE_IN_EV
        model_flux, true_flux = (out.nacs[:, pair] * V).sum((1, 2)).abs(), (truth.nacs[:, pair] * V).sum((1, 2)).abs()
        by_gap = ", ".join(f"{lo:g}-{hi:g} eV ({int(w.sum())}) {model_flux[w].sum() / true_flux[w].sum():.3f}"
                           for lo, hi in ((0, 0.05), (0.05, 0.1), (0.1, 0.3)) if (w := (gap >= lo) & (gap < hi)).any())
        print(f"{model}: {int(near.sum())} frames near the crossing: |cos| median {cos[near].median():.3f}, |d12| ratio "
              f"median {(a.norm(dim=1) / b.norm(dim=1))[near].median():.3f}, gap error median {(model_gap - gap)[near].median():+.3f} eV, "
              f"sum |d12 . v| ratio {model_flux[near].sum() / true_flux[near].sum():.3f} (by the oracle's gap: {by_gap})", flush=True)


def seam(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    config = open_campaign(args.campaign)[1]
    oracle = load_potential(config.oracle_spec())
    lo, hi = args.states
    if not args.span > 0:
        raise ConfigurationError(f"must be > 0, got {args.span}", where="--span")
    if not args.loop_radius > 0:
        raise ConfigurationError(f"must be > 0 Bohr, got {args.loop_radius}", where="--loop-radius")
    if not 0 <= lo < hi < oracle.n_states:
        raise ConfigurationError(f"need 0 <= I < J < {oracle.n_states}, got {lo} {hi}", where="--states")
    x0, masses, _, modes = oracle.harmonic_modes()
    cart = (modes / np.sqrt(np.repeat(masses, 3))[:, None]).T.reshape(modes.shape[1], *x0.shape)  # Bohr per unit q
    pair = state_pairs(oracle.n_states).index((lo, hi))

    def evaluate(potential, q: np.ndarray):
        """Energies and state vectors at normal-mode displacements q (K, M) from the reference geometry."""
        return potential.compute(torch.as_tensor(x0 + np.tensordot(q, cart, 1)), nacs=False)

    def gaps(out) -> np.ndarray:
        return (out.energies[:, hi] - out.energies[:, lo]).abs().numpy() * HARTREE_IN_EV

    reference = oracle.compute(torch.as_tensor(x0)[None], nacs=True)
    h = reference.nacs[0, pair].numpy() * float(reference.energies[0, hi] - reference.energies[0, lo])
    coupling = int(np.argmax(np.abs(np.tensordot(cart, h, ([1, 2], [0, 1])))))
    others = [k for k in range(len(cart)) if k != coupling]
    if len(others) > 3:
        raise ConfigurationError(f"the grid search handles up to 4 modes, the oracle has {len(cart)}", where="seam")
    axis = np.linspace(-args.span, args.span, 41)
    grid = np.zeros((len(axis) ** len(others), len(cart)))
    grid[:, others] = np.stack(np.meshgrid(*[axis] * len(others), indexing="ij"), -1).reshape(-1, len(others))
    point = grid[np.argmin(gaps(evaluate(oracle, grid)))]
    # the line through the seam point across the seam (along the oracle gap's gradient, coupling mode held at 0)
    # and the displacement along the coupling mode that opens the gap there
    probe = np.eye(len(cart))[others]
    sides = gaps(evaluate(oracle, np.concatenate([point + probe, point - probe])))
    across = np.zeros(len(cart))
    across[others] = sides[: len(others)] - sides[len(others):]
    across *= args.span / 2 / np.linalg.norm(across)
    line = point + np.linspace(-1, 1, 9)[:, None] * across
    opened = point + np.eye(len(cart))[coupling] * args.span / 4

    def describe(name: str, potential) -> None:
        out = evaluate(potential, np.concatenate([line, opened[None]]))
        gap = gaps(out)
        text = (f"{name}: gap on the line across the seam (meV) {np.round(gap[:-1] * 1000).astype(int).tolist()}, "
                f"gap at {args.span / 4:g} along mode {coupling} {gap[-1]:.3f} eV")
        if out.state_vectors is not None:  # which diabatic state state `lo` is mostly, along the line
            character = np.abs(out.state_vectors[:-1, :, lo].numpy()).argmax(axis=1)
            text += (f"; state {lo} is diabatic {character.tolist()}: the diabatic states "
                     + ("cross" if len(set(character.tolist())) > 1 else "do NOT cross (they touch: an avoided crossing)"))
        print(text, flush=True)

    print(f"oracle: states {lo}-{hi} couple along mode {coupling}; seam point q = {np.round(point, 1).tolist()}, the line "
          f"runs {np.linalg.norm(np.tensordot(2 * across, cart, 1)):.2f} Bohr across it")
    # the geometric phase around the oracle's seam: a loop of --loop-radius in the oracle's branching plane about the
    # point of smallest oracle gap (refined from the grid point); +-pi where the states intersect inside it, 0 where not
    refined = minimize(lambda q: float(gaps(evaluate(oracle, q[None]))[0]), point, method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 4000}).x
    center = x0 + np.tensordot(refined, cart, 1)
    plane = potential_branching_plane(oracle, center, (lo, hi))

    def phase(name: str, potential) -> None:
        loop = geometric_phase(potential, center, (lo, hi), args.loop_radius, plane=plane)
        print(f"{name}: coupling integral around the oracle's seam (radius {args.loop_radius:g} Bohr) {loop.integral:+.3f} rad "
              f"({'an intersection inside' if loop.encloses else 'NO intersection inside'}; gap on the loop "
              f"{loop.smallest_gap_ev:.3f}-{loop.largest_gap_ev:.3f} eV, closure {loop.closure:.3f})", flush=True)

    describe("oracle", oracle)
    phase("oracle", oracle)
    for model in args.models:
        potential = ModelPotential(model, oracle.numbers.numpy(), dtype=torch.float64)
        describe(str(model), potential)
        phase(str(model), potential)


def leave_out(split: dict[str, np.ndarray], energies_ev: np.ndarray, lowest_above: float | None,
              gap_below: float | None, gap_pair: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """`split` without the training and validation frames whose lowest state lies more than `lowest_above` eV above the
    dataset's lowest energy, or whose gap between the states `gap_pair` (default: the smallest between adjacent states)
    is below `gap_below` eV (test frames stay)."""
    lowest = energies_ev.min(axis=1) - np.nanmin(energies_ev)
    if gap_pair is None:
        gap = np.diff(np.sort(energies_ev, axis=1), axis=1).min(axis=1)
    else:
        if not all(0 <= i < energies_ev.shape[1] for i in gap_pair):
            raise ConfigurationError(f"states {gap_pair} outside 0..{energies_ev.shape[1] - 1}", where="--gap-pair")
        gap = np.abs(energies_ev[:, gap_pair[1]] - energies_ev[:, gap_pair[0]])
    drop = np.zeros(len(energies_ev), dtype=bool)
    if lowest_above is not None:
        drop |= lowest > lowest_above
    if gap_below is not None:
        drop |= gap < gap_below
    kept = {name: (idx if name == "test" else idx[~drop[idx]]) for name, idx in split.items()}
    for name in ("train", "val"):
        print(f"{name}: {len(kept[name])} of {len(split[name])} frames kept")
        if len(kept[name]) == 0:
            raise ConfigurationError(f"no {name} frame is left", where="--leave-out-*")
    return kept


def retrain(args: argparse.Namespace) -> None:
    config, oracle, ics, reference = oracle_reference(str(args.campaign), args.trajectories)
    weights = {name: float(value) for name, value in (item.split("=") for item in args.weight)}
    data = args.campaign / "data.h5"
    split = campaign_split(data, seed=1)
    if args.leave_out_lowest_above is not None or args.leave_out_gap_below is not None:
        pair = tuple(int(i) for i in args.gap_pair.split(",")) if args.gap_pair else None
        if pair is not None and len(pair) != 2:
            raise ConfigurationError(f"expected two states I,J, got {args.gap_pair!r}", where="--gap-pair")
        split = leave_out(split, read_frames(data).energies * HARTREE_IN_EV, args.leave_out_lowest_above,
                          args.leave_out_gap_below, pair)
    c = replace(config.committee, width=args.width or config.committee.width, recipe=args.recipe or config.committee.recipe)
    # every member's settings are checked (ConfigurationError naming the field) before anything is written
    members = [TrainingConfig(data=str(data), output=str(args.output / f"member_{k}"), recipe=c.recipe,
                              network=committee_architecture(c), batch_size=c.batch_size, learning_rate=c.learning_rate,
                              max_epochs=args.epochs or c.epochs,
                              patience=max(20, c.warm_epochs // 2) if args.patience is None else args.patience, seed=100 + k,
                              threads=1, progress_bar=False, accelerator="cpu", weights=weights or None,
                              energy_cap_ev=args.energy_cap_ev) for k in range(args.members)]
    for member in members:
        Path(member.output).mkdir(parents=True, exist_ok=True)
        save_split(split, Path(member.output) / "split.npz")
        train(member)
        report(f"{member.output} ({c.recipe}, width {c.width}, weights {weights or 'of the recipe'}, energy cap {args.energy_cap_ev} eV)",
               model_populations(Path(member.output), oracle, ics, config), reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=300)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("populations")
    p.add_argument("campaign", type=Path)
    p.add_argument("--last", action="store_true")
    p.add_argument("--members", action="store_true")
    p.add_argument("--nac-epsilon", type=float)
    p.add_argument("--driver", choices=DRIVERS, help="how the committee drives (default: the campaign's)")
    p = sub.add_parser("decompose")
    p.add_argument("campaign", type=Path)
    p.add_argument("--iteration", type=int, help="which iteration's committee (default: the last trained)")
    p = sub.add_parser("crossing")
    p.add_argument("campaign", type=Path)
    p.add_argument("models", type=Path, nargs="+")
    p = sub.add_parser("seam")
    p.add_argument("campaign", type=Path)
    p.add_argument("models", type=Path, nargs="+")
    p.add_argument("--states", type=int, nargs=2, default=(1, 2), metavar=("I", "J"))
    p.add_argument("--span", type=float, default=60.0, help="grid half-width in mass-weighted normal coordinates")
    p.add_argument("--loop-radius", type=float, default=0.1, help="Bohr: the loop of the geometric-phase check")
    p = sub.add_parser("retrain")
    p.add_argument("campaign", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--weight", action="append", default=[], help="NAME=VALUE loss weight (nacs, diabatic_couplings, ...)")
    p.add_argument("--energy-cap-ev", type=float, help="energy window: labels of states this far above the lowest count less")
    p.add_argument("--epochs", type=int, help="instead of the campaign's first-iteration epochs")
    p.add_argument("--width", type=int, help="features per atom, instead of the campaign's")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="training recipe, instead of the campaign's")
    p.add_argument("--patience", type=int, help="early stopping after this many epochs without improvement (0: none)")
    p.add_argument("--leave-out-lowest-above", type=float, metavar="EV",
                   help="train without frames whose lowest state lies this far above the dataset's lowest energy")
    p.add_argument("--leave-out-gap-below", type=float, metavar="EV", help="train without frames with a gap below this")
    p.add_argument("--gap-pair", metavar="I,J", help="the gap of --leave-out-gap-below: states I and J (default: any adjacent)")
    args = parser.parse_args()
    try:
        {"populations": populations, "decompose": decompose, "crossing": crossing, "seam": seam, "retrain": retrain}[args.command](args)
    except ExsnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ValueError as exc:  # a --weight without '='
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
