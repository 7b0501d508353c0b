"""exsnn.analysis: kinetic fits recover known time constants with honest bootstrap errors; populations with bands,
hops, energy diagnostics and exports of a real run file (SO2 LVC), checked against the run itself and shnitsel-tools."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from exsnn.analysis.diagnostics import Thresholds
from exsnn.analysis.kinetics import KineticNetwork, bootstrap_kinetics, fit_kinetics, parse_network, sequential_network
from exsnn.analysis.populations import ensemble_populations
from exsnn.analysis.records import read_run
from exsnn.analysis.report import analyze_run
from exsnn.errors import ConfigurationError
from exsnn.units import BOHR_IN_ANGSTROM, HARTREE_IN_EV

TIME = np.arange(0.0, 200.5, 0.5)


def markov_trajectories(network: KineticNetwork, tau_fs: np.ndarray, start: int, n: int, seed: int) -> np.ndarray:
    """Exact stochastic realisations of a first-order network: (T, n, N) 0/1 state indicators on TIME."""
    rng = np.random.default_rng(seed)
    states = np.empty((len(TIME), n), dtype=np.int64)
    for b in range(n):
        state, now, history = start, 0.0, []
        while True:
            outgoing = [(target, 1.0 / tau) for (source, target), tau in zip(network.steps, tau_fs) if source == state]
            if not outgoing:
                history.append((np.inf, state))
                break
            total = sum(rate for _, rate in outgoing)
            dwell = rng.exponential(1.0 / total)
            history.append((now + dwell, state))
            now += dwell
            state = outgoing[rng.choice(len(outgoing), p=[rate / total for _, rate in outgoing])][0]
        ends = np.array([end for end, _ in history])
        states[:, b] = np.array([s for _, s in history])[np.searchsorted(ends, TIME, side="right")]
    return (states[..., None] == np.arange(network.n_states)).astype(float)


# -------------------------------------------------------------------------------------------------------- kinetics


@pytest.mark.parametrize("spec, tau, noise", [("S2->S1->S0", [20.0, 60.0], 0.01),
                                              ("S2->S1, S2->S0, S1->S0", [25.0, 80.0, 40.0], 0.003)])
def test_fit_recovers_time_constants_of_noisy_synthetic_populations(spec: str, tau: list[float], noise: float) -> None:
    network = parse_network(spec, 3)
    exact = network.populations(TIME, np.array([0.0, 0.0, 1.0]), np.array(tau))
    assert np.allclose(exact.sum(axis=1), 1.0)
    noisy = exact + np.random.default_rng(3).normal(0.0, noise, exact.shape)
    fit = fit_kinetics(TIME, noisy, network)
    assert np.allclose(fit.tau_fs, tau, rtol=0.05)
    assert fit.rms == pytest.approx(noise, rel=0.15)  # the residual is the noise


def test_sequential_model_solution_is_the_textbook_one() -> None:
    """S2 -> S1 -> S0: P2 = exp(-t/t1), P1 = t2/(t1 - t2) (exp(-t/t1) - exp(-t/t2))... in rates k1, k2."""
    network = sequential_network(2, 3)
    assert network.labels == ["S2->S1", "S1->S0"]
    k1, k2 = 1 / 20.0, 1 / 60.0
    P = network.populations(TIME, np.array([0.0, 0.0, 1.0]), np.array([20.0, 60.0]))
    assert np.allclose(P[:, 2], np.exp(-k1 * TIME))
    assert np.allclose(P[:, 1], k1 / (k2 - k1) * (np.exp(-k1 * TIME) - np.exp(-k2 * TIME)))
    # equal time constants: the general matrix exponential (P1 = k t exp(-k t))
    P = network.populations(TIME, np.array([0.0, 0.0, 1.0]), np.array([30.0, 30.0]))
    assert np.allclose(P[:, 1], TIME / 30.0 * np.exp(-TIME / 30.0), atol=1e-9)


def test_bootstrap_errors_match_the_spread_of_independent_ensembles() -> None:
    network = parse_network("S2->S1->S0", 3)
    tau = np.array([20.0, 60.0])
    per_trajectory = markov_trajectories(network, tau, 2, 200, seed=1)
    fit = bootstrap_kinetics(TIME, per_trajectory, network, n_bootstrap=100, seed=4)
    assert fit.error_fs is not None and fit.interval_fs is not None
    assert np.all(np.abs(fit.tau_fs - tau) < 4 * fit.error_fs)
    assert np.all((fit.interval_fs[:, 0] < fit.tau_fs) & (fit.tau_fs < fit.interval_fs[:, 1]))
    spread = np.std([fit_kinetics(TIME, markov_trajectories(network, tau, 2, 200, seed=100 + k).mean(axis=1), network,
                                  starts=[np.log(tau)]).tau_fs for k in range(25)], axis=0, ddof=1)
    assert np.all((fit.error_fs > 0.5 * spread) & (fit.error_fs < 2.0 * spread))
    labels = fit.as_dict()
    assert set(labels) == {"S2->S1", "S1->S0"} and labels["S2->S1"]["error_fs"] == pytest.approx(fit.error_fs[0])


def test_network_specs_are_checked() -> None:
    assert parse_network("S3->S1; 1->0", 4).steps == ((3, 1), (1, 0))
    for spec, message in (("S2-S1", "steps such as"), ("S2->S5", "does not exist"), ("S1->S1", "goes nowhere"),
                          ("S2->S1, S2->S1", "twice"), ("X->S1", "a state such as")):
        with pytest.raises(ConfigurationError, match=message):
            parse_network(spec, 3)
    with pytest.raises(ConfigurationError, match="excited initial state"):
        sequential_network(0, 3)


def test_population_bands_have_the_binomial_width() -> None:
    rng = np.random.default_rng(7)
    B = 400
    active = (rng.random((3, B)) < np.array([[0.5], [0.2], [0.05]])).astype(np.int64)
    quantum = np.stack([1.0 - active, active], axis=2).astype(float)
    populations = ensemble_populations(np.arange(3.0), active, quantum, n_bootstrap=2000, seed=1)
    p = populations.classical[:, 1]
    half_width = (populations.classical_high[:, 1] - populations.classical_low[:, 1]) / 2
    assert np.allclose(half_width, 1.96 * np.sqrt(p * (1 - p) / B), rtol=0.2)
    assert np.allclose(populations.classical, populations.quantum)


# ------------------------------------------------------------------------------------------------- a real run file


CONFIG = """
[potential]
spec = "lvc:{template}"

[initial_conditions]
sampling = "wigner"
n_trajectories = 24
initial_state = "S2"
seed = 5

[integrator]
dt_fs = 0.5
duration_fs = 40.0

[output]
file = "so2.h5"
record_every = {record_every}
geometry_every = {geometry_every}
checkpoint_every = 40
"""


def make_run(folder: Path, shared: Path, geometry_every: int, record_every: int = 1) -> Path:
    from exsnn.dynamics.config import load_config
    from exsnn.dynamics.ensemble import run_ensemble

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "so2.toml"
    config.write_text(CONFIG.format(template=shared / "schnarc" / "lvc_so2_3s" / "LVC.template", geometry_every=geometry_every,
                                    record_every=record_every))
    run_ensemble(load_config(config), progress=False)
    return folder / "so2.h5"


def engine_populations(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time (fs), classical and quantum populations over the trajectories that did not fail, read directly."""
    import h5py

    from exsnn.dynamics.fssh import FAILED_STATUSES
    from exsnn.units import AU_TIME_IN_FS

    with h5py.File(path, "r") as h5:
        time = h5["steps/time"][()] * AU_TIME_IN_FS
        active, quantum, status = h5["steps/active"][()], h5["steps/populations"][()], h5["steps/status"][-1]
        n_states = int(h5.attrs["n_states"])
    keep = ~np.isin(status, FAILED_STATUSES)
    classical = np.stack([(active[:, keep] == s).mean(axis=1) for s in range(n_states)], axis=1)
    return time, classical, quantum[:, keep].mean(axis=1)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), shared_data, geometry_every=1)


def test_analyze_run_populations_lifetimes_and_files(run_file: Path, tmp_path: Path) -> None:
    from exsnn.dynamics.ensemble import summarize_run

    result = analyze_run(run_file, tmp_path / "so2", n_bootstrap=200, n_bootstrap_fit=20)
    json.dumps(result)  # JSON-able
    time, classical, quantum = engine_populations(run_file)  # straight from the engine's arrays
    assert np.allclose(result["time_fs"], time)
    assert np.allclose(np.array(result["populations"]).T, classical)
    assert np.allclose(np.array(result["populations_quantum"]).T, quantum, atol=1e-6)
    low, high = np.array(result["populations_low"]).T, np.array(result["populations_high"]).T
    assert np.all((low <= classical + 1e-12) & (classical <= high + 1e-12))
    assert result["kinetic_model"] == "S2->S1, S1->S0"
    s21 = result["lifetimes"]["S2->S1"]
    assert s21["tau_fs"] > 0 and s21["error_fs"] > 0 and s21["interval_fs"][0] < s21["tau_fs"] < s21["interval_fs"][1]
    summary = summarize_run(str(run_file))
    assert result["hops"]["accepted"] == summary.hops and result["hops"]["frustrated"] == summary.frustrated_hops
    for name in ("population plot", "population table", "hop table", "hop geometries", "diagnostics", "analysis (JSON)"):
        assert Path(result["files"][name]).exists(), name
    assert json.loads(Path(result["files"]["analysis (JSON)"]).read_text())["lifetimes"] == result["lifetimes"]


def test_hop_gaps_and_geometries_come_from_the_hop_step(run_file: Path, tmp_path: Path) -> None:
    import ase.io

    records = read_run(run_file)
    result = analyze_run(run_file, tmp_path / "so2", n_bootstrap=0, kinetic_model="none")
    events = [e for e in result["hops"]["events"] if e["kind"] == "fssh" and not e["frustrated"]]
    assert events and result["hops"]["geometries_exact"] == len(events)  # geometry_every = 1
    frames = ase.io.read(result["files"]["hop geometries"], ":")
    for event, atoms in zip(events, frames):
        t = int(np.flatnonzero(records.step == event["step"])[0])
        energies = records.energies[t, event["trajectory"]]
        assert event["gap_ev"] == pytest.approx((energies[event["target"]] - energies[event["source"]]) * HARTREE_IN_EV)
        assert records.active[t, event["trajectory"]] == event["target"]
        assert np.allclose(atoms.positions / 0.529177210544, records.positions[event["step"], event["trajectory"]], atol=1e-5)


@pytest.fixture(scope="module")
def sparse_run_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The ensemble of `run_file` (same seed: the same trajectories) with geometries every 7 steps, records every 3."""
    return make_run(tmp_path_factory.mktemp("sparse"), shared_data, geometry_every=7, record_every=3)


def accepted_events(result: dict) -> list[dict]:
    return [e for e in result["hops"]["events"] if e["kind"] == "fssh" and not e["frustrated"]]


def test_run_file_records_the_exact_geometry_and_gap_of_every_hop(run_file: Path) -> None:
    with h5py.File(run_file) as h5:
        hops = {key: h5[f"hops/{key}"][()] for key in h5["hops"]}
        units = {key: h5[f"hops/{key}"].attrs.get("unit") for key in ("positions", "gap")}
        geometry_step, positions, energies = h5["geometries/step"][()], h5["geometries/positions"][()], h5["steps/energies"][()]
        assert h5.attrs["format_version"] == 2
    assert units == {"positions": "Bohr", "gap": "Hartree"}
    assert len(hops["trajectory"]) and hops["positions"].shape == (len(hops["trajectory"]), 3, 3)
    assert np.array_equal(geometry_step, np.arange(len(geometry_step)))  # geometry_every = 1: snapshot t is step t
    np.testing.assert_array_equal(hops["positions"], positions[hops["step"], hops["trajectory"]])
    at_hop = energies[hops["step"], hops["trajectory"]]
    rows = np.arange(len(at_hop))
    np.testing.assert_array_equal(hops["gap"], at_hop[rows, hops["target"]] - at_hop[rows, hops["source"]])


def test_hop_geometries_are_exact_between_geometry_snapshots(run_file: Path, sparse_run_file: Path, tmp_path: Path) -> None:
    import ase.io

    from exsnn.analysis.report import HOP_GEOMETRIES_RECORDED

    dense, sparse = read_run(run_file), read_run(sparse_run_file)
    for key in dense.hops:  # the output settings do not change the dynamics
        np.testing.assert_array_equal(dense.hops[key], sparse.hops[key], err_msg=key)
    results = {name: analyze_run(path, tmp_path / name, n_bootstrap=0, kinetic_model="none")
               for name, path in (("dense", run_file), ("sparse", sparse_run_file))}
    events = accepted_events(results["sparse"])
    assert events and events == accepted_events(results["dense"])
    steps = np.array([e["step"] for e in events])
    assert np.any(steps % 7) and np.any(steps % 3)  # hops between snapshots and between records
    for result in results.values():
        assert result["hops"]["geometries_source"] == HOP_GEOMETRIES_RECORDED
        assert result["hops"]["geometries_exact"] == len(events) and result["hops"]["geometries_from_earlier_snapshot"] == 0
        frames = ase.io.read(result["files"]["hop geometries"], ":")
        assert len(frames) == len(events)
        for event, atoms in zip(events, frames):
            # the trajectory's positions at the hop step (snapshot `step` of the dense run), to the 1e-8 Angstrom of XYZ
            expected = dense.positions[event["step"], event["trajectory"]]
            np.testing.assert_allclose(atoms.positions / BOHR_IN_ANGSTROM, expected, rtol=0, atol=5e-8)
            assert atoms.info["geometry_from"] == "hop" and atoms.info["exact"] and atoms.info["snapshot_step"] == event["step"]
            t = event["step"]  # dense records every step: the gap there
            energies = dense.energies[t, event["trajectory"]]
            assert event["gap_ev"] == (energies[event["target"]] - energies[event["source"]]) * HARTREE_IN_EV
            assert atoms.info["gap_eV"] == pytest.approx(event["gap_ev"])


def test_run_file_without_hop_geometries_still_analyses(sparse_run_file: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A run file written before /hops/positions and /hops/gap: hop geometries from the last snapshot, said so."""
    import argparse

    import ase.io

    from exsnn.analysis.report import HOP_GEOMETRIES_FROM_SNAPSHOTS
    from exsnn.cli.photo import add_analyze_options, run_analyze

    old = tmp_path / "old.h5"
    shutil.copy(sparse_run_file, old)
    with h5py.File(old, "r+") as h5:
        del h5["hops/positions"], h5["hops/gap"]
        h5.attrs["format_version"] = 1
    records = read_run(old)
    assert not records.hop_geometries
    result = analyze_run(old, tmp_path / "old", n_bootstrap=0, kinetic_model="none")
    events = accepted_events(result)
    hops = result["hops"]
    assert hops["geometries_source"] == HOP_GEOMETRIES_FROM_SNAPSHOTS
    assert hops["geometries_exact"] + hops["geometries_from_earlier_snapshot"] == len(events)
    assert hops["geometries_exact"] == sum(e["step"] % 7 == 0 for e in events) and hops["geometries_from_earlier_snapshot"] > 0
    for event, atoms in zip(events, ase.io.read(result["files"]["hop geometries"], ":")):
        snapshot = event["step"] - event["step"] % 7
        assert atoms.info["geometry_from"] == "snapshot" and atoms.info["snapshot_step"] == snapshot
        assert atoms.info["exact"] == (snapshot == event["step"])
        expected = records.positions[snapshot // 7, event["trajectory"]]
        np.testing.assert_allclose(atoms.positions / BOHR_IN_ANGSTROM, expected, rtol=0, atol=5e-8)
        assert (event["gap_ev"] is None) == (event["step"] % 3 != 0)  # only recorded steps have energies
    parser = argparse.ArgumentParser()
    parser.add_argument("run_file")
    parser.add_argument("--output")
    add_analyze_options(parser)
    assert run_analyze(parser.parse_args([str(old), "--output", str(tmp_path / "cli"), "--bootstrap", "0", "--model", "none"])) == 0
    assert "hop geometries: approximate" in capsys.readouterr().out


def test_subsets_of_trajectories(run_file: Path) -> None:
    records = read_run(run_file)
    result = analyze_run(run_file, trajectories=[0, 3, 5], n_bootstrap=50, kinetic_model="none")
    assert result["trajectories_used"] == [0, 3, 5]
    expected = (records.active[:, [0, 3, 5], None] == np.arange(3)).mean(axis=1)
    assert np.allclose(np.array(result["populations"]).T, expected)
    with pytest.raises(ConfigurationError, match="do not exist"):
        analyze_run(run_file, trajectories=[99])


def test_energy_diagnostics_exclude_trajectories_with_reasons(run_file: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.h5"
    shutil.copy(run_file, broken)
    records = read_run(run_file)
    eV = 1.0 / HARTREE_IN_EV
    accepted = np.flatnonzero(~records.hops["frustrated"] & (records.hops["kind"] == 0))
    hop_trajectory, hop_step = int(records.hops["trajectory"][accepted[0]]), int(records.hops["step"][accepted[0]])
    with h5py.File(broken, "r+") as h5:
        total = h5["steps/total"][()]
        total[:, 1] += np.linspace(0.0, 0.3 * eV, len(total))  # slow drift of 0.3 eV (steps of ~0.004 eV)
        total[40:, 2] += 0.15 * eV  # one jump of 0.15 eV
        h5["steps/total"][...] = total
        energies = h5["steps/energies"][()]
        source = int(records.hops["source"][accepted[0]])
        energies[hop_step, hop_trajectory, source] -= 2.0 * eV  # a 2 eV potential-energy jump at a hop
        h5["steps/energies"][...] = energies
        h5["hops/gap"][accepted[0]] += 2.0 * eV  # (the gap recorded with the hop)
    result = analyze_run(broken, n_bootstrap=0, kinetic_model="none")
    excluded = result["trajectories_excluded"]
    assert any("drift" in reason for reason in excluded[1])
    assert any("jump between records" in reason for reason in excluded[2])
    assert any("at a hop" in reason for reason in excluded[hop_trajectory])
    assert not {1, 2, hop_trajectory} & set(result["trajectories_used"])
    kept = np.array(result["trajectories_used"])
    assert np.allclose(np.array(result["populations"]).T, (records.active[:, kept, None] == np.arange(3)).mean(axis=1))
    everything = analyze_run(broken, n_bootstrap=0, kinetic_model="none", include_excluded=True)
    assert len(everything["trajectories_used"]) == records.n_trajectories
    loose = analyze_run(broken, n_bootstrap=0, kinetic_model="none", thresholds=Thresholds(None, None, None))
    assert not loose["trajectories_excluded"]


def test_shnitsel_tools_reads_the_export_with_the_same_populations(run_file: Path, tmp_path: Path) -> None:
    shnitsel = pytest.importorskip("shnitsel", reason="shnitsel-tools is not installed (test extra)")
    from shnitsel.analyze.populations import calc_classical_populations

    records = read_run(run_file)
    analyze_run(run_file, n_bootstrap=0, kinetic_model="none", shnitsel=tmp_path / "shnitsel")
    assert len(list((tmp_path / "shnitsel").glob("traj_*.nc"))) == records.n_trajectories
    tree = shnitsel.read(tmp_path / "shnitsel", kind="shnitsel", parallel=False)
    relative = calc_classical_populations(tree.as_stacked).relative
    ours = (records.active[..., None] == np.arange(3)).mean(axis=1)
    assert np.allclose(relative.values, ours)
    assert np.allclose(relative.coords["time"].values, records.time_fs)
    one = next(d for d in tree.collect_data() if int(d.dataset.coords["atrajectory"]) == 3)
    assert np.allclose(one.dataset["energy"].values, records.energies[:, 3])
    assert np.allclose(one.dataset["atXYZ"].values, records.positions[:, 3])


def test_ase_export(run_file: Path, tmp_path: Path) -> None:
    from ase.io import read

    records = read_run(run_file)
    analyze_run(run_file, n_bootstrap=0, kinetic_model="none", ase=tmp_path / "ase")
    frames = read(tmp_path / "ase" / "traj_00004.traj", ":")
    assert len(frames) == len(records.geometry_step)
    step = 17
    assert np.allclose(frames[step].positions / 0.529177210544, records.positions[step, 4], atol=1e-6)
    assert frames[step].info["active_state"] == records.active[step, 4]
    assert frames[step].get_potential_energy() == pytest.approx(records.energies[step, 4, records.active[step, 4]] * HARTREE_IN_EV)


def test_cli_analyze_options(run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from exsnn.cli.photo import add_analyze_options, run_analyze

    parser = argparse.ArgumentParser()
    parser.add_argument("run_file")
    parser.add_argument("--output")
    add_analyze_options(parser)
    args = parser.parse_args([str(run_file), "--output", str(tmp_path / "x"), "--trajectories", "0-9,12", "--bootstrap", "20",
                              "--fit-bootstrap", "5", "--json"])
    assert run_analyze(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trajectories_used"] == list(range(10)) + [12] and "S2->S1" in result["lifetimes"]
