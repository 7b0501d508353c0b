"""PySCF labelling: physics of the labels, failure handling, resumable parallel labelling (process pool and Dask)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import H2O_DATASET
from exsnn.data import read_frames
from exsnn.qm.labelling import label_file
from exsnn.qm.overlap_nacs import cis_wavefunction, state_overlaps
from exsnn.qm.pyscf_backend import excited_states, label_geometry
from exsnn.qm.settings import parse_method

WATER = np.array([[0.01, 0.02, 0.2217], [0.0, 1.3809, -0.8567], [0.02, -1.4309, -0.9267]])
NUMBERS = np.array([8, 1, 1])
CIS = parse_method("tda-hf/sto-3g", n_states=3)


def test_gradients_match_finite_differences_of_energies() -> None:
    result = label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=3, nacs="none"))
    assert result.failure is None
    h = 1e-4
    for atom, axis in [(0, 2), (1, 1), (2, 2)]:
        plus, minus = WATER.copy(), WATER.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(excited_states(NUMBERS, plus, CIS).energies - excited_states(NUMBERS, minus, CIS).energies) / (2 * h)
        np.testing.assert_allclose(result.forces[atom, :, axis], fd, atol=2e-6)


def test_overlap_nacs_are_antisymmetric_and_consistent_along_any_direction() -> None:
    result = label_geometry(NUMBERS, WATER, CIS)
    assert result.failure is None and result.nacs.shape == (3, 3, 3)
    reference = cis_wavefunction(excited_states(NUMBERS, WATER, CIS))
    np.testing.assert_allclose(state_overlaps(reference, reference), np.eye(3), atol=1e-10)
    direction = np.random.default_rng(0).normal(size=(3, 3))
    direction /= np.linalg.norm(direction)
    h = 1e-3
    displaced = []
    for sign in (1, -1):
        s = state_overlaps(reference, cis_wavefunction(excited_states(NUMBERS, WATER + sign * h * direction, CIS)))
        displaced.append(s * np.sign(np.diag(s))[None, :])
    derivative = (displaced[0] - displaced[1]) / (2 * h)
    np.testing.assert_allclose(derivative, -derivative.T, atol=1e-5)  # d_IJ = -d_JI
    along = np.einsum("apx,ax->p", result.nacs, direction)
    # both are central differences with h = 1e-3 (error O(h^2) ~ 1e-5, different along different directions)
    np.testing.assert_allclose(along, [derivative[0, 1], derivative[0, 2], derivative[1, 2]], atol=5e-5)


def test_failures_are_recorded_with_reasons() -> None:
    collapsed = WATER.copy()
    collapsed[1] = collapsed[0] + 1e-4  # two nuclei on top of each other
    broken = label_geometry(NUMBERS, collapsed, CIS)
    assert broken.failure is not None and broken.energies is None
    too_many = label_geometry(np.array([1, 1]), np.array([[0, 0, 0], [0, 0, 1.4]]), parse_method("tda-hf/sto-3g", n_states=4))
    assert too_many.failure is not None and "only 1 singlet excitations exist" in too_many.failure


def geometries_file(tmp_path: Path, n: int) -> Path:
    lines = H2O_DATASET.read_text().splitlines()
    path = tmp_path / "h2o.xyz"
    path.write_text("\n".join(lines[: 5 * n]) + "\n")
    return path


def test_label_resumes_and_records_failures(tmp_path: Path) -> None:
    source = geometries_file(tmp_path, 4)
    text = source.read_text().splitlines()
    oxygen, hydrogen = text[17].split(), text[18].split()  # frame 3: count, header, O, H, H on lines 15-19
    text[18] = " ".join(["H", *oxygen[1:4], *hydrogen[4:]])  # put a hydrogen on the oxygen: the SCF must fail
    source.write_text("\n".join(text) + "\n")
    output = tmp_path / "labelled.h5"
    first = label_file(source, output, parse_method("tda-hf/sto-3g", n_states=3, nacs="none"), executor="local:2", progress=False)
    assert (first.labelled, first.failed, first.skipped) == (3, 1, 0)
    assert 3 in first.failures
    arrays = read_frames(output)
    provenance = [json.loads(p) for p in arrays.provenance]
    failed = [k for k, p in enumerate(provenance) if "failure" in p]
    assert len(failed) == 1 and not arrays.masks["energies"][failed[0]]  # written, masked, with its reason
    assert all("timings" in p and p["input_index"] in range(4) for p in provenance)
    info = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "data", "info", str(output), "--json"], capture_output=True, text=True)
    assert [entry["frame"] for entry in json.loads(info.stdout)["failed_frames"]] == failed
    again = label_file(source, output, parse_method("tda-hf/sto-3g", n_states=3, nacs="none"), executor="serial", progress=False)
    assert (again.labelled, again.failed, again.skipped) == (0, 0, 4)
    assert read_frames(output).n_frames == 4


def test_dask_workers_on_loopback_survive_a_killed_worker(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    source = geometries_file(tmp_path, 10)
    output = tmp_path / "dask.h5"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1") as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())
            address = cluster.scheduler_address

            def kill_one_worker() -> None:
                time.sleep(1.5)  # workers are busy labelling by then
                os.kill(pids[0], signal.SIGKILL)

            killer = threading.Thread(target=kill_one_worker)
            killer.start()
            summary = label_file(source, output, parse_method("tda-hf/sto-3g", n_states=3, nacs="overlap"), executor=f"dask:{address}", progress=False)
            killer.join()
            assert pids[0] not in client.run(os.getpid).values()  # the worker really died (the nanny started another)
    assert summary.labelled == 10 and summary.failed == 0
    indices = sorted(json.loads(p)["input_index"] for p in read_frames(output).provenance)
    assert indices == list(range(10))  # every geometry exactly once


def test_pyscf_potential_in_point(tmp_path: Path) -> None:
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO 0.0 0.0 0.117\nH 0.0 0.757 -0.469\nH 0.0 -0.757 -0.469\n")
    result = subprocess.run([sys.executable, "-m", "exsnn.cli.main", "point", "--potential", "pyscf:tda-hf/sto-3g,states=3", str(xyz), "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    frame = json.loads(result.stdout)[0]
    direct = label_geometry(NUMBERS, np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]]) * 1.8897261254578281, CIS)
    np.testing.assert_allclose(frame["energies"], direct.energies, atol=1e-7)
    np.testing.assert_allclose(np.array(frame["gradients"]), -direct.forces.transpose(1, 0, 2), atol=1e-6)
    assert np.shape(frame["nacs"]) == (3, 3, 3)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


CH2NH2 = np.array([[0.0, 0.0, 0.0], [0.0, 0.02, 1.28], [0.01, 0.94, -0.54], [0.0, -0.94, -0.55], [0.02, 0.87, 1.85],
                   [0.0, -0.87, 1.86]]) * 1.8897261254578281


@pytest.mark.parametrize(
    "numbers, positions, method, charge",
    [(NUMBERS, WATER, "tda-hf/sto-3g", 0), (NUMBERS, WATER, "tda-b3lyp/sto-3g", 0),
     (np.array([6, 7, 1, 1, 1, 1]), CH2NH2, "tda-hf/sto-3g", 1)],
    ids=["H2O-CIS", "H2O-TDA-B3LYP", "CH2NH2+-CIS"],
)
def test_analytic_ground_excited_nacs_match_overlap_finite_differences(numbers, positions, method, charge) -> None:
    from exsnn.qm.analytic_nacs import ground_excited_nacs

    tight = parse_method(method, n_states=3, charge=charge, fd_step=5e-4, scf_conv_tol=1e-14, scf_conv_tol_grad=1e-10)
    states = excited_states(numbers, positions, tight)
    states.mf.conv_tol_cpscf = 1e-12
    analytic = ground_excited_nacs(states)
    reference = label_geometry(numbers, positions, tight)
    assert reference.failure is None
    np.testing.assert_allclose(analytic, reference.nacs[:, :2], atol=1e-5)  # pairs 01 and 02
    with_etf = ground_excited_nacs(states, etf=True)
    # electron-translation factors: no net translation (exact for HF; DFT integration grids leave ~1e-6)
    assert np.abs(with_etf.sum(axis=0)).max() < 1e-5
    assert np.abs(analytic.sum(axis=0)).max() > 1e-2  # without them the sum over atoms does not vanish


def test_analytic_mode_labels_s0_s1_and_refuses_more_states() -> None:
    result = label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=2, nacs="analytic"))
    assert result.failure is None and result.nacs.shape == (3, 1, 3)
    assert np.abs(result.nacs.sum(axis=0)).max() < 1e-10  # ETF by default
    with pytest.raises(ValueError, match="not implemented yet"):
        parse_method("tda-hf/sto-3g", n_states=3, nacs="analytic")


def test_sa_casscf_option_gradients_and_nacs() -> None:
    numbers = np.array([6, 7, 1, 1, 1, 1])
    settings = parse_method("casscf(2,2)/sto-3g", n_states=2, charge=1)
    assert settings.nacs == "analytic" and settings.method_label == "SA-CASSCF(2,2)"
    result = label_geometry(numbers, CH2NH2, settings)
    assert result.failure is None and result.nacs.shape == (6, 1, 3)
    assert np.abs(result.nacs.sum(axis=0)).max() < 1e-8  # PySCF's ETF option is on by default here
    h = 1e-4
    plus, minus = CH2NH2.copy(), CH2NH2.copy()
    plus[1, 2] += h
    minus[1, 2] -= h
    energies = [label_geometry(numbers, p, parse_method("casscf(2,2)/sto-3g", n_states=2, charge=1, nacs="none")).energies for p in (plus, minus)]
    np.testing.assert_allclose(result.forces[1, :, 2], -(energies[0] - energies[1]) / (2 * h), atol=1e-6)
    with pytest.raises(ValueError, match="analytic"):
        parse_method("casscf(2,2)/sto-3g", n_states=2, nacs="overlap")
