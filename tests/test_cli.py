"""The CLI contract other checks rely on: `exsnn data import` and `exsnn data info --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CH2NH2_FILES, H2O_DATASET

from exsnn.data import read_frames


def exsnn(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return result


def test_help_lists_subcommands() -> None:
    result = exsnn("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "data" in result.stdout
    data_help = exsnn("data", "--help").stdout
    assert all(word in data_help for word in ("import", "info", "export"))


@pytest.mark.parametrize("name", sorted(CH2NH2_FILES))
def test_import_and_info_on_ch2nh2(shared_data: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.h5"
    imported = exsnn("data", "import", CH2NH2_FILES[name], out)
    assert imported.returncode == 0, imported.stderr
    assert "99 frames" in imported.stdout and str(out) in imported.stdout
    info = exsnn("data", "info", out, "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["n_frames"] == 99 and summary["n_states"] == 3
    assert summary["labels"] == {"energies": 99, "forces": 99, "nacs": 99, "dipoles": 99}
    short = sorted(p["frame"] for p in summary["problems"] if p["reason"].startswith("atoms") and "apart" in p["reason"])
    assert short == list(range(10))
    text = exsnn("data", "info", out).stdout
    assert "short_distance: frames 0-9" in text and "frames: 99" in text


def test_export_and_reimport_through_cli(shared_data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.h5"
    assert exsnn("data", "import", CH2NH2_FILES["schnarc_base64"], first).returncode == 0
    for suffix in (".db", ".xyz"):
        exported = tmp_path / f"out{suffix}"
        assert exsnn("data", "export", first, exported).returncode == 0
        again = tmp_path / f"again{suffix}.h5"
        assert exsnn("data", "import", exported, again).returncode == 0
        a, b = read_frames(first), read_frames(again)
        for name in ("positions", "energies", "forces", "nacs", "dipoles"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_import_append_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "h2o.h5"
    assert exsnn("data", "import", H2O_DATASET, out).returncode == 0
    assert "48 frames in the file" in exsnn("data", "import", H2O_DATASET, out, "--append").stdout
    assert "24 frames in the file" in exsnn("data", "import", H2O_DATASET, out, "--overwrite").stdout
    assert read_frames(out).n_frames == 24


def test_main_job_ch2nh2_photodynamics_on_the_shipped_committee(tmp_path: Path) -> None:
    """`exsnn demo` (the README's first command) with fewer trajectories: CH2NH2+ from S2 on the shipped committee,
    populations and lifetimes printed, every file it names written."""
    bad = exsnn("demo", "--ground-state-end", "0", "--output", tmp_path / "bad")
    assert bad.returncode == 2 and "--ground-state-end" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()
    result = exsnn("demo", "--trajectories", "6", "--duration", "4", "--output", tmp_path / "demo", "--threads", "1",
                   "--ground-state-end", "10")
    assert result.returncode == 0, result.stderr
    assert "ground_state_end_fs = 10.0" in (tmp_path / "demo" / "dynamics.toml").read_text()
    assert "CH2NH2+ photodynamics" in result.stdout and "S2->S1: tau =" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("0.0 ")]
    assert lines and lines[0].split()[1:] == ["0.000", "0.000", "1.000", "0.000"]  # S0-S3 (SA-4 committee): all in S2
    for name in ("run.h5", "spectrum.png", "spectrum.txt", "populations_run_populations.png", "excitations.json",
                 "initial_conditions.xyz", "photodynamics.json"):
        assert (tmp_path / "demo" / name).exists(), name
        assert str(tmp_path / "demo" / name) in result.stdout


def test_main_job_names_the_states_of_a_four_state_model(tmp_path: Path) -> None:
    """`exsnn demo --model` with a committee of four states (the SA-4 campaign's): every state is named S0-S3 in the
    excitations and the population table (the three default names gave an IndexError before)."""
    committee = Path(__file__).parents[1] / "datasets/ch2nh2_sacasscf/campaign_sa4/iteration_007/committee"
    result = exsnn("demo", "--model", committee, "--trajectories", "4", "--duration", "2", "--output", tmp_path / "demo",
                   "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "S3: excitation" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.strip().startswith("time/fs"))
    assert header.split()[1:] == ["S0", "S1", "S2", "S3"]


def test_main_job_runs_an_exported_committee_as_its_campaign_ran_it(tmp_path: Path) -> None:
    """`exsnn campaign export` records how the campaign ran its dynamics (ORIGIN.json's "run_as", with its modes file
    copied beside it), and `exsnn demo --model` on the export runs that way: the SA-4 campaign's members driver, its
    10 fs end in S0 and its SA-4 modes; a broken ORIGIN.json is refused before any output."""
    campaign = Path(__file__).parents[1] / "datasets/ch2nh2_sacasscf/campaign_sa4"
    shipped = tmp_path / "shipped"
    exported = exsnn("campaign", "export", campaign, "-o", shipped, "--iteration", "7")
    assert exported.returncode == 0, exported.stderr
    run_as = json.loads((shipped / "ORIGIN.json").read_text())["run_as"]
    assert run_as["driver"] == "members" and run_as["ground_state_end_fs"] == 10.0 and run_as["initial_state"] == 2
    assert (shipped / "modes.json").read_bytes() == (campaign.parent / "modes_sa4.json").read_bytes()
    result = exsnn("demo", "--model", shipped, "--trajectories", "4", "--duration", "2", "--output", tmp_path / "demo",
                   "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "the members driver" in result.stdout and "end after 10 fs" in result.stdout
    toml = (tmp_path / "demo" / "dynamics.toml").read_text()
    assert "ground_state_end_fs = 10.0" in toml and f"model:{shipped},driver=members" in toml
    origin = json.loads((shipped / "ORIGIN.json").read_text())
    for text, field in (("{not json", "ORIGIN.json"), (json.dumps({**origin, "run_as": {**run_as, "initial_state": "S2"}}),
                                                        "run_as.initial_state")):
        (shipped / "ORIGIN.json").write_text(text)
        broken = exsnn("demo", "--model", shipped, "--trajectories", "4", "--output", tmp_path / "broken")
        assert broken.returncode == 2 and field in broken.stderr and "Traceback" not in broken.stderr, broken.stderr
        assert not (tmp_path / "broken").exists()


def test_demo_runs_and_says_where_it_wrote(tmp_path: Path) -> None:
    result = exsnn("demo", "tully", "--output", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert "FSSH on Tully model 1" in result.stdout and "frames: 24" in result.stdout
    for name in ("tully1_k20_run.h5", "tully1_k20_populations.png", "tully1_k20_outcomes.png", "h2o_dataset.h5",
                 "h2o_dataset_spainn.db"):
        assert (tmp_path / "demo" / name).exists(), name
        assert str(tmp_path / "demo" / name) in result.stdout


def test_filter_drops_flagged_frames(shared_data: Path, tmp_path: Path) -> None:
    source = tmp_path / "all.h5"
    assert exsnn("data", "import", CH2NH2_FILES["spainn"], source).returncode == 0
    result = exsnn("data", "filter", source, tmp_path / "clean.h5")
    assert result.returncode == 0, result.stderr
    assert "kept 89 of 99" in result.stdout
    clean = read_frames(tmp_path / "clean.h5")
    original = [json.loads(p)["original_frame"] for p in clean.provenance]
    assert original == list(range(10, 99))
    np.testing.assert_array_equal(clean.energies, read_frames(source).energies[10:])


def test_cli_format_lists_match_the_registries() -> None:
    """The data command names formats without importing the importers (fast start-up): the lists must agree."""
    from exsnn.cli.data import EXPORT_FORMATS, IMPORT_FORMATS
    from exsnn.data.exporters import EXPORTERS
    from exsnn.data.importers import IMPORTERS

    assert set(IMPORT_FORMATS) == set(IMPORTERS) and set(EXPORT_FORMATS) == set(EXPORTERS)
