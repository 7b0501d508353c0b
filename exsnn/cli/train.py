"""`exsnn train DATA.h5 -o DIR` (one model or a committee) and `exsnn evaluate MODEL DATA.h5` (error table)."""

from __future__ import annotations

import argparse

from exsnn.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a multi-state network (or a committee) on an exsnn dataset")
    p.add_argument("data", help="exsnn HDF5 dataset")
    p.add_argument("-o", "--output", required=True, help="folder for checkpoints, logs, plots and model.pt")
    p.add_argument("--config", help="TOML file with any TrainingConfig field; flags override it")
    p.add_argument("--committee", type=int, default=1, help="train K models with seeds seed..seed+K-1 (default 1)")
    p.add_argument("--bootstrap", action="store_true", default=None, help="committee members train on bootstrap samples")
    p.add_argument("--recipe", help="named training defaults: exsnn-v4 (default), exsnn-v3, exsnn-v2, exsnn-v1 (before issue "
                                    "#18), spainn (SPaiNN's tutorial recipe); the options below override single values of it")
    p.add_argument("--epochs", dest="max_epochs", type=int, help="epoch budget (alone, it replaces the recipe's step budget)")
    p.add_argument("--steps", dest="max_steps", type=int_or_auto,
                   help="optimiser-step budget, or 'auto' (alone, it replaces the recipe's epoch budget)")
    p.add_argument("--batch-size", type=int_or_auto, help="structures per optimiser step, or 'auto' (from the training-set size)")
    p.add_argument("--lr", dest="learning_rate", type=float, help="(peak) learning rate of AdamW")
    p.add_argument("--schedule", help="learning-rate schedule: cosine (per step, with warm-up), plateau or none")
    p.add_argument("--warmup", type=float, help="cosine schedule: fraction of the step budget spent warming up")
    p.add_argument("--loss", help="normalised (each MSE over its label's variance) or raw (MSEs in atomic units)")
    p.add_argument("--force-weight", type=float, help="weight of the forces' term in the loss")
    p.add_argument("--nac-weight", type=float, help="weight of the couplings' term in the loss")
    p.add_argument("--energy-weight", type=float, help="weight of the energies' term in the loss")
    p.add_argument("--gap-weight", type=float,
                   help="weight of a term on the gaps between neighbouring states (0 in the recipes: off)")
    p.add_argument("--small-gap-weight", type=float,
                   help="weight of a term on the relative errors of the gaps between neighbouring states, error / (|gap| "
                        "+ 0.05 eV): fits the near-degenerate frames where FSSH hops (0 in the recipes: off)")
    p.add_argument("--diabatic-coupling-weight", type=float,
                   help="diabatic head: weight of a term on the squared off-diagonal elements of H, so that the "
                        "quasi-diabatic states stay as adiabatic as the labels allow (0 in the recipes: off)")
    p.add_argument("--seam-loop-weight", type=float,
                   help="diabatic head: weight of a term that makes the model's states turn around the data's labelled "
                        "seam loops as the reference's do (crossing, not touching, at an intersection; exsnn.model."
                        "seam_loss; 0 in the recipes: off)")
    p.add_argument("--energy-cap-ev", type=float,
                   help="labels of states more than this many eV above the training set's lowest energy count less, "
                        "1 / (1 + (excess / width)^2): far-out active-learning labels stop outweighing the region the "
                        "dynamics crosses (one molecule; default: every label counts the same)")
    p.add_argument("--energy-cap-width-ev", type=float, help="the width of that fade (eV, default 1)")
    p.add_argument("--width", dest="n_atom_basis", type=int)
    p.add_argument("--interactions", dest="n_interactions", type=int)
    p.add_argument("--cutoff", type=float, help="Bohr")
    p.add_argument("--representation", choices=("painn", "so3net"))
    p.add_argument("--dipoles", action="store_true", default=None, help="also learn dipoles and transition dipoles")
    p.add_argument("--head", choices=("adiabatic", "diabatic"),
                   help="adiabatic (default): energy and coupling heads; diabatic: a learned quasi-diabatic Hamiltonian "
                        "whose eigen-decomposition gives energies, forces and NACs")
    p.add_argument("--indexed-couplings", action="store_true", default=None,
                   help="diabatic head: weigh each atom's share of the couplings by its position in the atom list, so "
                        "couplings can change sign when equivalent atoms swap (one molecule, fixed atom order)")
    p.add_argument("--exchange", type=index_pairs, metavar="A-B[,C-D]",
                   help="indexed couplings: atom positions (0-based) that one symmetry operation of the molecule swaps")
    p.add_argument("--odd-couplings", type=index_pairs, metavar="I-J[,K-L]",
                   help="with --exchange: state pairs whose diabatic coupling changes sign under it (exactly zero at "
                        "geometries the operation leaves unchanged); every other element is made even under it")
    p.add_argument("--diabatic-dipoles", action="store_true", default=None,
                   help="diabatic head with --dipoles: learn quasi-diabatic dipoles, rotated into the adiabatic states by "
                        "the Hamiltonian's eigenvectors (dipole labels then tell crossing diabatic states from touching ones)")
    p.add_argument("--checkpoint-metric", choices=("loss", "energies_forces", "last"),
                   help="what keeps the best checkpoint and stops early: the whole validation loss (recipes' default), "
                        "its energy and force terms (what the dynamics runs on), or last: the final weights, the whole "
                        "budget without early stopping")
    p.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: no early stopping)")
    p.add_argument("--double", dest="double_precision", action="store_true", default=None, help="train in float64")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--accelerator", help="cpu, gpu or auto (default)")
    p.add_argument("--devices", help="number of devices for Lightning (e.g. 2 GPUs)")
    p.add_argument("--no-progress", dest="progress_bar", action="store_false", default=None)
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints in the output folder")
    p.set_defaults(run=run_train)

    p = subparsers.add_parser("evaluate", help="error table of a trained model on a dataset")
    p.add_argument("model", help="model.pt, a training folder, or a committee folder")
    p.add_argument("data", help="exsnn HDF5 dataset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_evaluate)


def index_pairs(text: str) -> list[list[int]]:
    """'1-2,3-4' -> [[1, 2], [3, 4]] (the values' own checks are ArchitectureConfig's)."""
    try:
        pairs = [[int(k) for k in item.split("-")] for item in text.split(",")]
    except ValueError:
        pairs = []
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected pairs of indices like 1-2 or 1-2,3-4, got {text!r}")
    return pairs


def int_or_auto(text: str) -> int | str:
    """A positive-integer option that also takes 'auto' (range checks are TrainingConfig's, with their messages)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


FIELDS = ("recipe", "max_steps", "schedule", "warmup", "loss", "max_epochs", "batch_size", "learning_rate", "n_atom_basis",
          "n_interactions", "cutoff", "representation", "dipoles", "head", "indexed_couplings",
          "exchange", "odd_couplings", "diabatic_dipoles", "checkpoint_metric", "split", "seed", "patience",
          "double_precision", "threads",
          "accelerator", "devices", "progress_bar", "bootstrap", "energy_cap_ev", "energy_cap_width_ev")


#: TrainingConfig / ArchitectureConfig field -> the flag that sets it (for error messages)
FLAGS = {"recipe": "--recipe", "max_steps": "--steps", "schedule": "--schedule", "warmup": "--warmup", "loss": "--loss",
         "weights.forces": "--force-weight", "weights.nacs": "--nac-weight",
         "weights.energies": "--energy-weight", "weights.gaps": "--gap-weight", "weights.small_gaps": "--small-gap-weight",
         "weights.diabatic_couplings": "--diabatic-coupling-weight", "weights.seam_loops": "--seam-loop-weight",
         "max_epochs": "--epochs",
         "batch_size": "--batch-size", "learning_rate": "--lr", "n_atom_basis": "--width",
         "n_interactions": "--interactions", "cutoff": "--cutoff", "representation": "--representation", "head": "--head",
         "indexed_couplings": "--indexed-couplings", "exchange": "--exchange", "odd_couplings": "--odd-couplings",
         "diabatic_dipoles": "--diabatic-dipoles", "split": "--split", "energy_cap_ev": "--energy-cap-ev",
         "energy_cap_width_ev": "--energy-cap-width-ev", "checkpoint_metric": "--checkpoint-metric",
         "seed": "--seed", "patience": "--patience", "threads": "--threads", "devices": "--devices"}


def run_train(args: argparse.Namespace) -> int:
    from exsnn.errors import ConfigurationError
    from exsnn.model.training import TrainingConfig, train, train_committee

    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    flags = (("forces", args.force_weight), ("nacs", args.nac_weight), ("energies", args.energy_weight),
             ("gaps", args.gap_weight), ("small_gaps", args.small_gap_weight),
             ("diabatic_couplings", args.diabatic_coupling_weight), ("seam_loops", args.seam_loop_weight))
    weights = {name: value for name, value in flags if value is not None}
    if weights:
        overrides["weights"] = weights
    if "split" in overrides:
        overrides["split"] = tuple(overrides["split"])
    if "devices" in overrides and str(overrides["devices"]).isdigit():
        overrides["devices"] = int(overrides["devices"])
    if args.config:
        config = TrainingConfig.from_file(args.config, data=args.data, output=args.output, **overrides)
    else:
        try:
            config = TrainingConfig.build(args.data, args.output, overrides, source="command line")
        except ConfigurationError as exc:
            if exc.where in FLAGS:
                raise ConfigurationError(exc.problem, source=FLAGS[exc.where]) from None
            raise
    if args.committee > 1:
        results = train_committee(config, args.committee, resume=not args.restart)
    else:
        results = [train(config, resume=not args.restart)]
    for k, result in enumerate(results):
        header = f"member {k}: " if len(results) > 1 else ""
        print(f"{header}trained {result['steps']} optimiser steps ({result['epochs']} epochs, batch "
              f"{result['plan']['batch_size']}, recipe {config.recipe}) on split {result['split']}; "
              "test errors (phase-free couplings):")
        print(result["table_text"])
        print(f"model: {result['model']}  (learning curve, logs and checkpoints in {result['output']})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from exsnn.model.evaluation import evaluate
    from exsnn.model.loss import format_error_table
    from exsnn.model.potential import model_files

    tables = {str(path): evaluate(path, args.data) for path in model_files(args.model)}
    if args.json:
        print_json(tables)
        return 0
    for path, table in tables.items():
        print(f"{path} on {args.data}:")
        print(format_error_table(table))
    return 0
