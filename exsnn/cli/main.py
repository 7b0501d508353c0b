"""Entry point of the `exsnn` command: builds the parser from the subcommand modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from exsnn import __version__
from exsnn.cli import campaign as campaign_cli
from exsnn.cli import data as data_cli
from exsnn.cli import demo as demo_cli
from exsnn.cli import dynamics as dynamics_cli
from exsnn.cli import label as label_cli
from exsnn.cli import photo as photo_cli
from exsnn.cli import point as point_cli
from exsnn.cli import scatter as scatter_cli
from exsnn.cli import train as train_cli
from exsnn.cli.output import json_only_stdout
from exsnn.errors import ExsnnError, ExsnnWarning

SUBCOMMAND_MODULES = (demo_cli, dynamics_cli, scatter_cli, point_cli, train_cli, label_cli, data_cli, campaign_cli, photo_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exsnn", description="Excited-state non-adiabatic dynamics with equivariant multi-state networks."
    )
    parser.add_argument("--version", action="version", version=f"exsnn {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors in the input too")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
                  line: str | None = None) -> None:
    """exsnn's own warnings read like its errors; other libraries' warnings keep Python's format."""
    if issubclass(category, ExsnnWarning):
        print(f"exsnn: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)  # type: ignore[arg-type]


_python_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "json", False):  # the JSON object alone on stdout, whatever the libraries print
            with json_only_stdout():
                return int(args.run(args) or 0)
        return int(args.run(args) or 0)
    except ExsnnError as exc:  # the input, a setting or the electronic structure is at fault: say what and where
        if args.traceback:
            traceback.print_exc()
        print(f"exsnn: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `exsnn data info FILE | head`: the reader left, nothing is wrong
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("exsnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
