"""Per-frame initial states: `exsnn excite` writes every selected frame with its `initial_state` into one file, and
`exsnn dynamics` with `initial_state = "file"` starts each trajectory in its frame's state; bad frames are exit 2
naming the file and the frame."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest

from exsnn.cli.main import main
from exsnn.photo.io import read_geometries, write_structures

CONFIG = """
[potential]
spec = "lvc:{template}"

[initial_conditions]
sampling = "file"
file = "{file}"
n_trajectories = {n}
initial_state = {state}

[integrator]
dt_fs = 0.5
duration_fs = 2.0

[output]
file = "run.h5"
"""


@pytest.fixture
def template(shared_data: Path) -> Path:
    return shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"


def write_config(folder: Path, template: Path, file: Path, n: int, state: str = '"file"') -> Path:
    path = folder / "run.toml"
    path.write_text(CONFIG.format(template=template, file=file, n=n, state=state))
    return path


def mixed_file(folder: Path, template: Path, states: list[int | str | None], name: str = "start.xyz") -> Path:
    """SO2 frames near the LVC reference geometry, frame k with initial_state states[k] (None: no key)."""
    from exsnn.potentials.spec import load_potential

    potential = load_potential(f"lvc:{template}", folder, "cpu")
    reference = potential.harmonic_modes()[0]  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    positions = reference[None] + rng.normal(0.0, 0.02, (len(states), *reference.shape))
    per_frame = [{} if s is None else {"initial_state": s} for s in states]
    return write_structures(folder / name, potential.numbers.numpy(), positions, per_frame=per_frame)


def test_excite_writes_one_file_and_each_trajectory_starts_in_its_frames_state(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wigner, excite = tmp_path / "wigner.xyz", tmp_path / "excite"
    assert main(["sample", str(template), "-n", "40", "--seed", "4", "-o", str(wigner)]) == 0
    assert main(["excite", str(wigner), "--potential", f"lvc:{template}", "-o", str(excite), "--states", "1,2",
                 "--stochastic", "--seed", "3"]) == 0
    selection = json.loads((excite / "selection.json").read_text())["initial_conditions"]
    combined = excite / "initial_conditions.xyz"
    assert "initial_conditions.xyz" in capsys.readouterr().out
    frames = ase.io.read(combined, ":")
    states = [int(atoms.info["initial_state"]) for atoms in frames]
    assert states == [row["state"] for row in selection] and set(states) == {1, 2}  # a mixed-state file
    assert [int(atoms.info["geometry"]) for atoms in frames] == [row["geometry"] for row in selection]
    _, positions, velocities = read_geometries(wigner)
    _, start_positions, start_velocities = read_geometries(combined)
    chosen = [row["geometry"] for row in selection]
    np.testing.assert_allclose(start_positions, positions[chosen], atol=1e-7)
    np.testing.assert_allclose(start_velocities, velocities[chosen], rtol=1e-5, atol=1e-10)
    for state in (1, 2):  # the per-state files hold the same frames
        assert len(ase.io.read(excite / f"initial_conditions_S{state}.xyz", ":")) == states.count(state)

    config = write_config(tmp_path, template, combined, n=len(states))
    assert main(["dynamics", str(config), "--json", "--no-progress"]) == 0
    with h5py.File(tmp_path / "run.h5") as h5:
        np.testing.assert_array_equal(h5["steps/active"][0], states)
        np.testing.assert_array_equal(h5["steps/populations"][0].argmax(axis=1), states)


def test_a_state_for_all_overrides_the_frames_states_with_a_warning(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = mixed_file(tmp_path, template, [1, 2, 2])
    config = write_config(tmp_path, template, start, n=3, state="1")
    assert main(["dynamics", str(config), "--json", "--no-progress"]) == 0
    assert "frames name initial states S2" in capsys.readouterr().err
    with h5py.File(tmp_path / "run.h5") as h5:
        assert (h5["steps/active"][0] == 1).all()


@pytest.mark.parametrize(
    "states, n, fragments",
    [
        ([2, None, 1], 3, ["frame 1: initial_state", "missing"]),
        ([1, 2, 3], 3, ["frame 2: initial_state", "S3 does not exist", "3 states"]),
        ([1, "X1", 2], 3, ["frame 1: initial_state", "expected a state index"]),
    ],
)
def test_bad_frames_are_exit_2_naming_file_and_frame(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], states: list, n: int, fragments: list[str]
) -> None:
    start = mixed_file(tmp_path, template, states)
    config = write_config(tmp_path, template, start, n=n)
    assert main(["dynamics", str(config), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert f"exsnn: error: {start}" in error and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, error
    assert not (tmp_path / "run.h5").exists()


def test_only_the_frames_used_need_the_key(template: Path, tmp_path: Path) -> None:
    start = mixed_file(tmp_path, template, [2, 1, None])
    assert main(["dynamics", str(write_config(tmp_path, template, start, n=2)), "--json", "--no-progress"]) == 0
    with h5py.File(tmp_path / "run.h5") as h5:
        np.testing.assert_array_equal(h5["steps/active"][0], [2, 1])


def test_initial_state_file_needs_sampling_file(template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, template, tmp_path / "none.xyz", n=2)
    config.write_text(config.read_text().replace('sampling = "file"', 'sampling = "wigner"'))
    assert main(["dynamics", str(config), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert str(config) in error and "[initial_conditions] initial_state" in error and "sampling = 'file'" in error


def test_hdf5_datasets_carry_no_per_frame_states(tmp_path: Path) -> None:
    from exsnn.dynamics.initial_conditions import frame_states, initial_states_from_file
    from exsnn.errors import DataError

    dataset = tmp_path / "frames.h5"
    dataset.write_bytes(b"")  # what is in it does not matter: HDF5 frames have no comment line
    assert frame_states(dataset, 3) is None
    with pytest.raises(DataError, match="no per-frame initial states") as info:
        initial_states_from_file(dataset, 3, 3)
    assert str(dataset) in str(info.value)
