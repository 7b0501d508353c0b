"""Entry point of the `exsnn` command: builds the parser from the subcommand modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from exsnn import __version__
from exsnn.cli import data as data_cli
from exsnn.cli import demo as demo_cli
from exsnn.cli import dynamics as dynamics_cli
from exsnn.cli import label as label_cli
from exsnn.cli import point as point_cli
from exsnn.cli import train as train_cli
from exsnn.cli import scatter as scatter_cli
from exsnn.data.errors import DataError

SUBCOMMAND_MODULES = (demo_cli, dynamics_cli, scatter_cli, point_cli, train_cli, label_cli, data_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exsnn", description="Excited-state non-adiabatic dynamics with equivariant multi-state networks."
    )
    parser.add_argument("--version", action="version", version=f"exsnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except DataError as exc:
        print(f"exsnn: error: {exc}", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as exc:
        print(f"exsnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("exsnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
