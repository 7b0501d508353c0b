"""`exsnn dynamics` / `analyze` / `point`: run files, resume after SIGKILL, analysis output, input errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from exsnn.dynamics.runfile import load_checkpoint
from exsnn.potentials.lvc import LVCPotential

CONFIG = """
[potential]
spec = "lvc:{template}"

[initial_conditions]
sampling = "wigner"
n_trajectories = {n}
initial_state = "S2"
seed = 3

[integrator]
dt_fs = 0.5
duration_fs = {duration}
decoherence = "edc"

[output]
file = "{output}"
geometry_every = 5
checkpoint_every = {checkpoint_every}
"""


def write_config(folder: Path, shared: Path, name: str, n: int = 40, duration: float = 40.0, checkpoint_every: int = 10) -> Path:
    template = shared / "schnarc" / "lvc_so2_3s" / "LVC.template"
    path = folder / f"{name}.toml"
    path.write_text(CONFIG.format(template=template, n=n, duration=duration, output=f"{name}.h5", checkpoint_every=checkpoint_every))
    return path


def exsnn(*args: object, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True, **kwargs)


def all_datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_run_file_contents_and_analysis(shared_data: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, shared_data, "run", n=20, duration=20.0)
    result = exsnn("dynamics", config, "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 40 and abs(sum(summary["classical_populations"]) - 1) < 1e-12
    data = all_datasets(tmp_path / "run.h5")
    assert data["steps/active"].shape == (41, 20) and data["steps/populations"].shape == (41, 20, 3)
    np.testing.assert_allclose(data["steps/populations"].sum(-1), 1.0, atol=1e-6)
    assert data["geometries/positions"].shape == (9, 20, 3, 3)
    assert (data["steps/active"][0] == 2).all()
    # hops recorded as (trajectory, step, from, to); the active state changes exactly at accepted hops
    accepted = ~data["hops/frustrated"]
    for traj, step, src, dst in zip(*(data[f"hops/{k}"][accepted] for k in ("trajectory", "step", "source", "target"))):
        assert data["steps/active"][step - 1, traj] == src and data["steps/active"][step, traj] == dst
    drift = np.abs(data["steps/total"] - data["steps/total"][0]).max()
    # hops conserve energy exactly (test_fssh); what remains is velocity-Verlet error on the strongly curved
    # S1/S2 surfaces of SO2 (measured 1.7e-3 at 0.5 fs, 5.8e-4 at 0.25 fs, 1.7e-4 at 0.125 fs: second order)
    assert drift < 5e-3
    analyzed = exsnn("analyze", tmp_path / "run.h5")
    assert analyzed.returncode == 0, analyzed.stderr
    png = tmp_path / "run_populations.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = np.loadtxt(tmp_path / "run_populations.txt")
    # columns: time, (classical, band low, band high) per state, quantum per state
    assert table.shape == (41, 13) and np.allclose(table[:, [1, 4, 7]].sum(1), 1) and np.allclose(table[:, 10:13].sum(1), 1)
    assert np.all(table[:, [2, 5, 8]] <= table[:, [1, 4, 7]] + 1e-12) and np.all(table[:, [3, 6, 9]] >= table[:, [1, 4, 7]] - 1e-12)


def test_trajectories_relaxed_to_s0_are_recorded_to_the_end_and_counted_in_s0(shared_data: Path, tmp_path: Path) -> None:
    """`ground_state_end_fs`: started in S0 (SO2 LVC; its S0 is far below S1), every trajectory ends after 5 fs there
    as "relaxed to S0"; the run still records the whole 20 fs, the relaxed trajectories frozen and counted in S0 by
    the summary and the analysis (not left out as failed ones are)."""
    config = write_config(tmp_path, shared_data, "run", n=10, duration=20.0)
    config.write_text(config.read_text().replace('initial_state = "S2"', 'initial_state = "S0"')
                      .replace('decoherence = "edc"', 'decoherence = "edc"\nground_state_end_fs = 5.0'))
    result = exsnn("dynamics", config, "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status_counts"] == {"relaxed to S0": 10} and summary["classical_populations"] == [1.0, 0.0, 0.0]
    data = all_datasets(tmp_path / "run.h5")
    assert data["steps/active"].shape == (41, 10) and data["steps/step"][-1] == 40
    status = data["steps/status"]
    assert (status[:10] == 0).all() and (status[10:] == 6).all()  # RELAXED after 10 steps of 0.5 fs
    assert np.array_equal(data["geometries/positions"][-1], data["geometries/positions"][2])  # frozen from 5 fs on
    analyzed = exsnn("analyze", tmp_path / "run.h5")
    assert analyzed.returncode == 0, analyzed.stderr
    table = np.loadtxt(tmp_path / "run_populations.txt")
    assert np.allclose(table[:, 1], 1.0)  # every trajectory counts, in S0


def test_resume_after_sigkill_is_bit_identical(shared_data: Path, tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    reference = write_config(reference_dir, shared_data, "run", n=60, duration=100.0)
    killed = write_config(killed_dir, shared_data, "run", n=60, duration=100.0)
    assert exsnn("dynamics", reference, "--no-progress").returncode == 0

    process = subprocess.Popen([sys.executable, "-m", "exsnn.cli.main", "dynamics", str(killed), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    output = killed_dir / "run.h5"
    deadline = time.monotonic() + 120
    while True:  # wait for a checkpoint past the start, then kill mid-run
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        if output.exists():
            state = load_checkpoint(output, torch.device("cpu"))
            if state is not None and state.step >= 30:
                break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(output, torch.device("cpu")).step
    assert interrupted_at < 200

    text = killed.read_text()
    changed = killed_dir / "changed.toml"
    changed.write_text(text.replace("dt_fs = 0.5", "dt_fs = 0.25"))
    refused = exsnn("dynamics", changed, "--resume", "--no-progress")
    assert refused.returncode == 2 and "resume needs the same input" in refused.stderr
    killed.write_text("# a comment added after the start does not change the run\n" + text)
    resumed = exsnn("dynamics", killed, "--resume", "--json", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_step"] == interrupted_at
    a, b = all_datasets(reference_dir / "run.h5"), all_datasets(output)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_run_started_without_hop_geometries_resumes_in_its_layout(shared_data: Path, tmp_path: Path) -> None:
    """A run file of format_version 1 (no /hops/positions, /hops/gap) resumed by this exsnn keeps its hop columns
    consistent; a new run records the hop geometries."""
    from exsnn.analysis.records import read_run
    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.ensemble import run_ensemble

    reference_dir, old_dir = tmp_path / "reference", tmp_path / "old"
    reference_dir.mkdir()
    old_dir.mkdir()
    reference = write_config(reference_dir, shared_data, "run", n=30, duration=40.0)
    run_ensemble(load_config(reference), progress=False)
    half = write_config(old_dir, shared_data, "run", n=30, duration=6.0)
    run_ensemble(load_config(half), progress=False)
    full = write_config(old_dir, shared_data, "run", n=30, duration=40.0)
    with h5py.File(old_dir / "run.h5", "r+") as h5:  # as an older exsnn wrote it, stopped at its last checkpoint
        assert len(h5["hops/trajectory"]) > 0
        del h5["hops/positions"], h5["hops/gap"]
        h5.attrs["format_version"] = 1
        h5.attrs["config"] = full.read_text()
        status = h5["checkpoint/status"][()]
        h5["checkpoint/status"][...] = np.where(status == 1, 0, status)  # finished by the shorter duration only
    assert run_ensemble(load_config(full), resume=True, progress=False).resumed_from_step == 12
    new, old = read_run(reference_dir / "run.h5"), read_run(old_dir / "run.h5")
    assert new.hop_geometries and not old.hop_geometries and np.any(old.hops["step"] > 12)
    for key in ("trajectory", "step", "source", "target", "frustrated", "kind"):
        np.testing.assert_array_equal(new.hops[key], old.hops[key], err_msg=key)
    np.testing.assert_array_equal(new.active, old.active)


def test_dynamics_input_errors_name_file_and_key(shared_data: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, shared_data, "bad")
    config.write_text(config.read_text().replace('initial_state = "S2"', 'initial_state = "S7"'))
    result = exsnn("dynamics", config, "--no-progress")
    assert result.returncode == 2 and str(config) in result.stderr and "S7 does not exist" in result.stderr
    config.write_text(config.read_text().replace("dt_fs = 0.5", "dt_fs = 0.5\ntimestep = 3"))
    result = exsnn("dynamics", config)
    assert result.returncode == 2 and "[integrator] timestep" in result.stderr and "unknown key" in result.stderr
    assert not (tmp_path / "bad.h5").exists()
    good = write_config(tmp_path, shared_data, "again", n=4, duration=2.0)
    assert exsnn("dynamics", good, "--no-progress").returncode == 0
    refused = exsnn("dynamics", good, "--no-progress")
    assert refused.returncode == 2 and "already exists" in refused.stderr


def test_point_json_matches_the_potential(shared_data: Path, tmp_path: Path) -> None:
    template = shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"
    xyz = tmp_path / "so2.xyz"
    xyz.write_text("3\nSO2\nS 0.0 0.0 0.0\nO 0.0 -1.26 0.72\nO 0.0 1.26 0.74\n3\nSO2\nS 0.0 0.0 0.01\nO 0.0 -1.25 0.72\nO 0.0 1.27 0.70\n")
    result = exsnn("point", "--potential", f"lvc:{template}", xyz, "--json")
    assert result.returncode == 0, result.stderr
    frames = json.loads(result.stdout)
    assert len(frames) == 2
    assert np.shape(frames[0]["energies"]) == (3,) and np.shape(frames[0]["gradients"]) == (3, 3, 3)
    assert np.shape(frames[0]["nacs"]) == (3, 3, 3)
    potential = LVCPotential(template)
    positions = torch.tensor([[[0.0, 0.0, 0.0], [0.0, -1.26, 0.72], [0.0, 1.26, 0.74]]], dtype=torch.float64) * 1.8897261254578281
    out = potential.compute(positions, all_forces=True)
    np.testing.assert_allclose(frames[0]["energies"], out.energies[0].numpy(), rtol=1e-7)
    np.testing.assert_allclose(frames[0]["gradients"], -out.all_forces[0].numpy(), rtol=1e-6, atol=1e-10)
    wrong = exsnn("point", "--potential", "tully1", xyz)
    assert wrong.returncode == 2 and "do not match" in wrong.stderr
    unknown = exsnn("point", "--potential", "nonsense:x", xyz)
    assert unknown.returncode == 2 and "unknown potential" in unknown.stderr


@pytest.mark.parametrize("momentum", [15.0])
def test_scatter_cli_json_contract(momentum: float) -> None:
    result = exsnn("scatter", "--model", "tully1", "--momentum", momentum, "--ntraj", 200, "--seed", 4, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("R_lower", "T_lower", "R_upper", "T_upper"):
        assert 0 <= data[key] <= 1 and data[f"{key}_err"] > 0
    assert abs(data["R_lower"] + data["T_lower"] + data["R_upper"] + data["T_upper"] - 1) < 1e-12
    again = json.loads(exsnn("scatter", "--model", "tully1", "--momentum", momentum, "--ntraj", 200, "--seed", 4, "--json").stdout)
    assert again["T_upper"] == data["T_upper"]


def test_failing_overwrite_leaves_a_finished_run_byte_identical(shared_data: Path, tmp_path: Path) -> None:
    """--overwrite checks the configuration and builds the initial conditions before it replaces anything."""
    config = write_config(tmp_path, shared_data, "run", n=4, duration=2.0)
    assert exsnn("dynamics", config, "--no-progress").returncode == 0
    finished = (tmp_path / "run.h5").read_bytes()
    good = config.read_text()
    (tmp_path / "one.xyz").write_text("3\nSO2\nS 0.0 0.0 0.0\nO 0.0 -1.26 0.72\nO 0.0 1.26 0.74\n")
    broken = {
        "too few geometries": good.replace('sampling = "wigner"', 'sampling = "file"\nfile = "one.xyz"'),
        "record_every = 0": good.replace("geometry_every = 5", "geometry_every = 5\nrecord_every = 0"),
        "non-finite time step": good.replace("dt_fs = 0.5", "dt_fs = nan"),
    }
    for what, text in broken.items():
        config.write_text(text)
        result = exsnn("dynamics", config, "--overwrite", "--no-progress")
        assert result.returncode == 2 and "exsnn: error:" in result.stderr, (what, result.stderr)
        assert (tmp_path / "run.h5").read_bytes() == finished, what
    config.write_text(good)
    assert exsnn("dynamics", config, "--overwrite", "--no-progress").returncode == 0


BAD_VALUES = [
    ("[output]", "record_every = 0", "[output] record_every"),
    ("[output]", "geometry_every = 0", "[output] geometry_every"),
    ("[output]", "checkpoint_every = -3", "[output] checkpoint_every"),
    ("[integrator]", "box_bohr = -5.0", "[integrator] box_bohr"),
    ("[integrator]", "edc_c = inf", "[integrator] edc_c"),
    ("[integrator]", "max_energy_drift_ev = nan", "[integrator] max_energy_drift_ev"),
    ("[integrator]", "forced_hop_gap_ev = -0.1", "[integrator] forced_hop_gap_ev"),
    ("[integrator]", "substeps = 0", "[integrator] substeps"),
    ("[integrator]", "ground_state_end_fs = 0.0", "[integrator] ground_state_end_fs"),
    ("[integrator]", "compile = 1", "[integrator] compile"),
    ("[integrator]", 'decoherence = "afssh-typo"', "[integrator] decoherence"),
    ("[initial_conditions]", "seed = -1", "[initial_conditions] seed"),
    ("[initial_conditions]", "momentum = nan", "[initial_conditions] momentum"),
    ("[initial_conditions]", "momentum = -2.0", "[initial_conditions] momentum"),
]


@pytest.mark.parametrize("section, line, key", BAD_VALUES)
def test_impossible_values_are_rejected_at_load_naming_file_and_key(
    shared_data: Path, tmp_path: Path, section: str, line: str, key: str
) -> None:
    from exsnn.dynamics.config import load_config
    from exsnn.errors import DataError

    config = write_config(tmp_path, shared_data, "bad")
    name = line.split(" = ")[0]
    text = "\n".join(row for row in config.read_text().splitlines() if not row.startswith(f"{name} ="))  # one value
    config.write_text(text.replace(section, f"{section}\n{line}", 1))
    with pytest.raises(DataError) as raised:
        load_config(config)
    assert str(config) in str(raised.value) and key in str(raised.value)


@pytest.mark.parametrize(
    "replace, key",
    [("dt_fs = 0.5", "dt_fs = -0.5"), ("dt_fs = 0.5", "dt_fs = inf"), ("duration_fs = 40.0", "duration_fs = nan")],
)
def test_time_step_and_duration_must_be_positive_and_finite(
    shared_data: Path, tmp_path: Path, replace: str, key: str
) -> None:
    from exsnn.dynamics.config import load_config
    from exsnn.errors import DataError

    config = write_config(tmp_path, shared_data, "bad")
    config.write_text(config.read_text().replace(replace, key))
    with pytest.raises(DataError, match=key.split(" = ")[0]):
        load_config(config)


def test_left_out_keys_take_the_dataclass_defaults(shared_data: Path, tmp_path: Path) -> None:
    from dataclasses import fields

    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.settings import FSSHSettings, OutputSettings

    path = tmp_path / "minimal.toml"
    path.write_text(
        '[potential]\nspec = "tully1"\n[initial_conditions]\nn_trajectories = 2\nsampling = "scattering"\n'
        "momentum = 20.0\n[integrator]\ndt_fs = 0.1\nduration_fs = 1.0\n"
    )
    config = load_config(path)
    reference = FSSHSettings(dt=config.settings.dt, n_steps=config.settings.n_steps)
    for f in fields(FSSHSettings):
        assert getattr(config.settings, f.name) == getattr(reference, f.name), f.name
    assert config.output_settings == OutputSettings()
    assert config.settings.max_energy_drift == pytest.approx(0.2 / 27.211386, rel=1e-6)  # 0.2 eV, as in SHARC


@pytest.mark.parametrize("momentum", ["0", "-5"])
def test_scatter_rejects_non_positive_momentum_naming_the_option(momentum: str) -> None:
    result = exsnn("scatter", "--model", "tully1", "--momentum", momentum, "--ntraj", 10)
    assert result.returncode == 2 and "--momentum" in result.stderr and "Traceback" not in result.stderr
