"""benchmarks/compare_on_the_fly.py: an on-the-fly reference in several batches against a model's run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT / "datasets" / "ch2nh2_sacasscf" / "on_the_fly_sa4" / "ch2nh2_on_the_fly_sa4.h5"


def compare(tmp_path: Path, name: str, *files: Path) -> dict:
    out = tmp_path / f"{name}.json"
    result = subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "compare_on_the_fly.py"), *map(str, files),
                             "--every", "1", "--json", str(out)], capture_output=True, text=True, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_reference_batches_map_onto_consecutive_model_trajectories(tmp_path: Path) -> None:
    """The committed SA-4 reference (8 trajectories, 2 of them ended by 12.5 fs) given as two batches covers model
    trajectories 0-15: twice the started and running counts of one batch, the same populations, and its "same
    starts" are all 16 of the model's trajectories."""
    run = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "demo", "--trajectories", "16", "--duration", "13",
                             "--output", str(run), "--threads", "1"], capture_output=True, text=True, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    one = compare(tmp_path, "one", REFERENCE, run / "run.h5")["rows"]
    two = compare(tmp_path, "two", REFERENCE, REFERENCE, run / "run.h5")["rows"]
    assert [r["time_fs"] for r in one] == [r["time_fs"] for r in two] and one[-1]["time_fs"] == 13.0
    for a, b in zip(one, two):
        assert (a["reference_started"], b["reference_started"]) == (8, 16)
        assert b["reference_running"] == 2 * a["reference_running"] and b["reference"] == a["reference"]
        assert b["model_same_starts"] == b["model_all"]  # the two batches started the model's 16 trajectories
    assert one[0]["reference"] == [0.0, 0.0, 1.0, 0.0] and one[-1]["reference_running"] < 8  # drift-check ends
