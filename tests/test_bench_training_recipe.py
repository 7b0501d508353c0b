"""The recipe cross-validation benchmark (`benchmarks/bench_training_recipe.py`): paired comparison and resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training_recipe.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_training_recipe", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _record(recipe: str, fold: int, forces: float) -> dict:
    return {"dataset": "d", "recipe": recipe, "fold": fold, "member": 0, "ok": True, "wall_s": 1.0, "steps": 10,
            "epochs": 1, "plan": {"batch_size": 2}, "test_errors": {"forces": {"mae": {"S0": forces}}}}


def test_paired_comparison_uses_ratios_over_the_same_folds(bench) -> None:
    # folds differ 10x in difficulty; "a" is 20% better on every fold: ahead when paired, not when the raw spreads
    # over folds are compared
    scale = [1.0, 10.0, 3.0, 0.5]
    records = [_record("a", k, 0.8 * s) for k, s in enumerate(scale)] + [_record("b", k, s) for k, s in enumerate(scale)]
    records.append(_record("b", 9, 1.0))  # a fold only one recipe finished is left out of the pairing
    row = bench.paired(bench.aggregate(records, {}))["d"]["a vs b"]["forces S0"]
    assert row["folds"] == 4 and row["wins"] == 4
    assert row["ratio"] == pytest.approx(0.8) and row["log_ratio_std"] == pytest.approx(0.0, abs=1e-12)
    assert row["ahead_paired"] and not row["ahead_unpaired"]
    records = [_record("a", k, s * f) for k, (s, f) in enumerate(zip(scale, [0.5, 1.5, 0.7, 1.2]))] + records[4:8]
    row = bench.paired(bench.aggregate(records, {}))["d"]["a vs b"]["forces S0"]
    assert row["wins"] == 2 and not row["ahead_paired"]
    # the --recipes order decides which recipe the others are compared with, not the order the trainings finished in
    # (a resumed run adds a new first recipe after the kept ones)
    later = [_record("c", k, 0.5 * s) for k, s in enumerate(scale)]
    compared = bench.paired(bench.aggregate(records + later, {}, ["c", "a", "b"]))["d"]
    assert list(compared) == ["c vs a", "c vs b"] and compared["c vs b"]["forces S0"]["wins"] == 4


def test_resume_keeps_finished_trainings_adds_members_and_refuses_other_settings(
        bench, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cv"
    args = ["--datasets", "so2-lvc", "--folds", "2", "--steps", "3", "--width", "8", "--interactions", "1", "--n-rbf", "4",
            "--recipes", "exsnn-v2,spainn", "--lvc-frames", "20", "--output", str(out)]
    assert bench.main(args) == 0
    lines = (out / "folds.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # a run killed after two trainings, mid-way through writing the third line
    (out / "folds.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    kept = {(r["recipe"], r["fold"]): r["test_errors"] for r in map(json.loads, lines[:2])}
    assert bench.main(args + ["--resume"]) == 0
    records = [json.loads(line) for line in (out / "folds.jsonl").read_text().splitlines()]
    assert sorted((r["recipe"], r["fold"]) for r in records) == sorted((r, f) for r in ("exsnn-v2", "spainn") for f in (0, 1))
    for r in records:  # the kept ones are the earlier results, untouched
        if (r["recipe"], r["fold"]) in kept:
            assert r["test_errors"] == kept[(r["recipe"], r["fold"])]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 4
    assert np.isfinite(summary["paired"]["so2-lvc"]["exsnn-v2 vs spainn"]["forces S0"]["ratio"])
    # a committee added later trains only the new members and analyses the kept first ones with them
    assert bench.main(args + ["--resume", "--committee", "2"]) == 0
    records = [json.loads(line) for line in (out / "folds.jsonl").read_text().splitlines()]
    assert len(records) == 6 and sorted(r["fold"] for r in records if r["member"] == 1) == [0, 1]
    committee = json.loads((out / "summary.json").read_text())["results"]["so2-lvc"]["exsnn-v2"]["committee"]
    assert committee["members"] == 2 and committee["folds"] == 2
    with pytest.raises(SystemExit) as refused:
        bench.main([a if a != "3" else "4" for a in args] + ["--resume"])
    assert refused.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # an unknown dataset is refused before the output folder exists
        bench.main(["--datasets", "so2-lvc,no_such.h5", "--output", str(tmp_path / "unknown")])
    assert refused.value.code == 2 and "no_such.h5" in capsys.readouterr().err and not (tmp_path / "unknown").exists()
