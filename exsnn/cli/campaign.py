"""`exsnn campaign run|resume|status|retry-failed|export`: active-learning campaigns (see exsnn.active)."""

from __future__ import annotations

import argparse
import sys

from exsnn.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    campaign = subparsers.add_parser("campaign", help="active learning: simulate, select uncertain geometries, label, retrain")
    commands = campaign.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    p = commands.add_parser("run", help="start a campaign from a TOML file (keys documented in exsnn/active/config.py)")
    p.add_argument("config", help="campaign TOML file, e.g. dynamics/campaign_so2_lvc.toml")
    p.add_argument("-o", "--output", required=True, help="campaign directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty campaign directory")
    p.set_defaults(run=run_campaign)
    p = commands.add_parser("resume", help="continue a campaign where it stopped (after a crash or a kill)")
    p.add_argument("directory", help="campaign directory")
    p.set_defaults(run=resume_campaign)
    p = commands.add_parser("status", help="iteration, phase, labels, test errors, finished trajectories, time per phase")
    p.add_argument("directory", help="campaign directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=campaign_status)
    p = commands.add_parser("retry-failed", help="label again, with the oracle as it is now, the frames whose label failed "
                                                "(in place, while the campaign is not running)")
    p.add_argument("directory", help="campaign directory")
    p.set_defaults(run=campaign_retry_failed)
    p = commands.add_parser("export", help="copy a trained committee out of a campaign (loadable as model:FOLDER)")
    p.add_argument("directory", help="campaign directory")
    p.add_argument("-o", "--output", required=True, help="committee folder to write (replaces an earlier export)")
    p.add_argument("--iteration", type=int, help="which iteration's committee (default: the newest fully trained)")
    p.set_defaults(run=campaign_export)


def _say(message: str) -> None:
    print(f"campaign: {message}", file=sys.stderr, flush=True)


def _finish(directory: str) -> int:
    from exsnn.active.campaign import Campaign

    state = Campaign(directory, progress=_say).run()
    verdict = "converged" if state.converged else f"stopped by the {state.stopped} without converging"
    print(f"campaign {verdict} after iteration {state.iteration} with {state.n_labels} labels; "
          f"reports in {directory}/iteration_*/report.md")
    return 0


def run_campaign(args: argparse.Namespace) -> int:
    from exsnn.active.campaign import start

    start(args.config, args.output, overwrite=args.overwrite)
    return _finish(args.output)


def resume_campaign(args: argparse.Namespace) -> int:
    return _finish(args.directory)


def campaign_status(args: argparse.Namespace) -> int:
    from exsnn.active.campaign import status

    info = status(args.directory)
    if args.json:
        print_json(info)
        return 0
    print(f"iteration {info['iteration']}, phase {info['phase']}, {info['n_labels']} labels "
          f"(budget {info['label_budget']}), stopped: {info['stopped'] or 'no'}")
    if info["n_failed"]:
        print(f"{info['n_failed']} of them failed (the oracle could not label the geometry): `exsnn campaign retry-failed "
              f"{args.directory}` tries them again")
    if info["finished_fraction"] is not None:
        print(f"last iteration: {100 * info['finished_fraction']:.0f}% of trajectories finished without crossing the upper threshold")
    for key, values in info["test_errors"].items():
        print(f"test {key}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    lifetimes = (info["history"][-1].get("decision") or {}).get("lifetimes") if info["history"] else None
    if lifetimes:  # [stopping] kinetics
        from exsnn.active.report import time_constants_line

        print("last iteration's time constants: " + time_constants_line(lifetimes))
    print("time per phase (s): " + ", ".join(f"{k} {v:.1f}" for k, v in info["phase_seconds"].items()))
    return 0


def campaign_export(args: argparse.Namespace) -> int:
    from exsnn.active.export import export_committee

    origin = export_committee(args.directory, args.output, args.iteration)
    print(f"committee of iteration {origin['iteration']} ({origin['n_trained_on']} labels trained on) written to "
          f"{args.output}; run it with model:{args.output}")
    return 0


def campaign_retry_failed(args: argparse.Namespace) -> int:
    from exsnn.active.retry import retry_failed

    retried, labelled = retry_failed(args.directory, progress=_say)
    print(f"{labelled} of {retried} failed labels labelled now; the next training uses them "
          f"(resume with `exsnn campaign resume {args.directory}`)")
    return 0
