"""The photodynamics job (exsnn.workflows.photodynamics) on the exact SO2 LVC model: every step's file is written and
agrees with the steps run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exsnn.workflows.photodynamics import PhotodynamicsJob, format_lifetimes, format_populations, run_photodynamics


def test_photodynamics_job_on_lvc(shared_data: Path, tmp_path: Path) -> None:
    from exsnn.data.geometries import read_structures
    from exsnn.photo.excitation import read_excitations
    from exsnn.photo.modes import read_modes
    from exsnn.photo.wigner import sample_wigner

    template = shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"
    job = PhotodynamicsJob(potential=f"lvc:{template}", modes=str(template), n_trajectories=24, duration_fs=6.0,
                           seed=3, molecule="SO2", n_bootstrap=50)
    result = run_photodynamics(job, tmp_path / "job", say=lambda line: None)
    files = result["files"]
    for label in ("excitations (JSON)", "absorption spectrum (plot)", "absorption spectrum (table)", "initial conditions (XYZ)",
                  "dynamics input (TOML)", "surface-hopping run (HDF5)", "population plot", "summary (JSON)"):
        assert Path(files[label]).exists(), label
    # the initial conditions are the seeded Wigner sample of the modes
    sample = sample_wigner(read_modes(template), 24, seed=3)
    positions = np.array([p for _, p, _ in read_structures(files["initial conditions (XYZ)"])])
    np.testing.assert_allclose(positions, sample.positions, atol=1e-6)
    # every trajectory starts in S2, populations stay normalised
    populations = np.array(result["populations"])  # (N, T)
    np.testing.assert_allclose(populations[:, 0], [0, 0, 1])
    np.testing.assert_allclose(populations.sum(axis=0), 1.0, atol=1e-12)
    # the spectrum is that of the excitations the job computed
    excitations = read_excitations(files["excitations (JSON)"])
    assert excitations.energies.shape == (24, 3) and np.all(excitations.strengths >= 0)
    np.testing.assert_allclose(result["excitation_ev_mean"], np.mean(excitations.excitation_energies, axis=0) * 27.211386, rtol=1e-5)
    assert set(result["lifetimes"]) == {"S2->S1", "S1->S0"}
    assert json.loads(Path(files["summary (JSON)"]).read_text())["lifetimes"] == result["lifetimes"]
    assert len(format_populations(result, ["S0", "S1", "S2"], every_fs=2.0)) == 1 + 4
    assert len(format_lifetimes(result)) == 2


def test_state_names_that_do_not_fit_the_potential_are_refused_before_any_output(shared_data: Path, tmp_path: Path) -> None:
    import pytest

    from exsnn.errors import ConfigurationError

    template = shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"
    job = PhotodynamicsJob(potential=f"lvc:{template}", modes=str(template), n_trajectories=4, duration_fs=1.0,
                           state_labels=["S0", "S1"])  # SO2's LVC model has three states
    with pytest.raises(ConfigurationError, match="2 state names for the 3 states"):
        run_photodynamics(job, tmp_path / "job", say=lambda line: None)
    assert not (tmp_path / "job").exists()
