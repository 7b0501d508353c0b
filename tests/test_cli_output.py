"""`--json` commands: the JSON object is the only thing on standard output, whatever libraries print."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import os, sys
from exsnn.cli.output import json_only_stdout, print_json
with json_only_stdout():
    print("a library's warning")              # Python-level writes to sys.stdout
    os.write(1, b"a C extension's output\\n")  # writes to descriptor 1
    print_json({"labelled": 3})
print("after the command")
"""


def test_library_output_goes_to_stderr_and_json_alone_to_stdout() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert json.loads(lines[0]) == {"labelled": 3}
    assert lines[1:] == ["after the command"]  # descriptor 1 is restored afterwards
    assert "a library's warning" in result.stderr and "a C extension's output" in result.stderr


def test_json_is_printed_where_stdout_has_no_descriptor(capsys) -> None:
    from exsnn.cli.output import json_only_stdout, print_json

    with json_only_stdout():  # pytest's capture: nothing to redirect, the JSON still arrives
        print_json([1, 2])
    assert json.loads(capsys.readouterr().out) == [1, 2]
