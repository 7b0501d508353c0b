"""Machine-readable output of the `--json` commands: the JSON object is the only thing on standard output.

Libraries print to the process's standard output on their own (PySCF's logger writes its warnings to the stream it
captured at import, e.g. "Krylov solver reached subspace convergence ..." since PySCF 2.15; C extensions write to
file descriptor 1). While a `--json` command runs, `json_only_stdout` points descriptor 1 at standard error, so all of
that lands there, and `print_json` writes the object to the real standard output.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_json_stream: TextIO | None = None  # the real standard output while json_only_stdout is active


def print_json(obj: Any) -> None:
    """Write obj as one line of JSON to the command's standard output."""
    stream = _json_stream if _json_stream is not None else sys.stdout
    stream.write(json.dumps(obj) + "\n")
    stream.flush()


@contextmanager
def json_only_stdout() -> Iterator[None]:
    """Send everything written to standard output (Python's or a C library's) to standard error, except print_json.
    Does nothing where standard output is not a file descriptor (e.g. captured in-process by a test)."""
    global _json_stream
    try:
        stdout_fd, stderr_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(stdout_fd)
    os.dup2(stderr_fd, stdout_fd)
    _json_stream = os.fdopen(os.dup(saved), "w")
    try:
        yield
    finally:
        stream, _json_stream = _json_stream, None
        stream.close()
        sys.stdout.flush()
        os.dup2(saved, stdout_fd)
        os.close(saved)
