"""Active-learning campaigns on the exact SO2 LVC oracle: the loop, its stopping rule, and crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from exsnn.errors import ConfigurationError

PROJECT = Path(__file__).resolve().parents[1]

TINY = """
[oracle]
spec = "lvc:{template}"
batch = 1
[initial]
n_frames = 16
spread = 1.5
[committee]
members = 2
epochs = 15
warm_epochs = 8
width = 8
interactions = 1
batch_size = 8
learning_rate = 3e-3
[dynamics]
n_trajectories = 12
initial_state = 2
dt_fs = 0.5
duration_fs = 4.0
[selection]
budget = 6
[stopping]
max_iterations = 2
label_budget = 40
[run]
seed = 3
"""


def write_config(folder: Path, shared_data: Path, text: str = TINY) -> Path:
    path = folder / "campaign.toml"
    path.write_text(text.format(template=shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template"))
    return path


def exsnn(*args: object, **options: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, **options)  # type: ignore[call-overload]


def dataset_fingerprint(path: Path) -> list[tuple]:
    from exsnn.data import read_frames

    arrays = read_frames(path)
    return [(json.dumps(json.loads(p)["campaign"], sort_keys=True), np.round(arrays.frame(k).positions, 10).tobytes(),
             None if arrays.frame(k).energies is None else np.round(arrays.frame(k).energies, 10).tobytes())
            for k, p in enumerate(arrays.provenance)]


def test_bad_campaign_input_is_refused_before_writing(shared_data: Path, tmp_path: Path) -> None:
    from exsnn.active.config import parse_config
    from exsnn.active.train import member_training

    good = write_config(tmp_path, shared_data).read_text()
    with pytest.raises(ConfigurationError, match=r"\[committee\] members"):
        parse_config(good.replace("members = 2", "members = 1"), tmp_path / "c.toml")
    diverse = parse_config(good.replace("members = 2", "members = 2\nbootstrap = true"), tmp_path / "c.toml")
    assert diverse.committee.bootstrap and not parse_config(good, tmp_path / "c.toml").committee.bootstrap
    with pytest.raises(ConfigurationError, match=r"\[committee\] bootstrap"):
        parse_config(good.replace("members = 2", "members = 2\nbootstrap = 1"), tmp_path / "c.toml")
    weighted = parse_config(good.replace("members = 2", "members = 2\ngap_weight = 2"), tmp_path / "c.toml")
    assert weighted.committee.gap_weight == 2.0 and parse_config(good, tmp_path / "c.toml").committee.gap_weight == 0
    with pytest.raises(ConfigurationError, match=r"\[committee\] gap_weight"):
        parse_config(good.replace("members = 2", "members = 2\ngap_weight = -1"), tmp_path / "c.toml")
    diabatic = parse_config(good.replace("members = 2", "members = 2\nhead = 'diabatic'"), tmp_path / "c.toml")
    assert diabatic.committee.head == "diabatic" and parse_config(good, tmp_path / "c.toml").committee.head == "adiabatic"
    with pytest.raises(ConfigurationError, match=r"\[committee\] head"):
        parse_config(good.replace("members = 2", "members = 2\nhead = 'magic'"), tmp_path / "c.toml")
    symmetric = "members = 2\nhead = 'diabatic'\nindexed_couplings = true\nexchange = [[1, 2]]\nodd_couplings = [[1, 2]]"
    assert parse_config(good.replace("members = 2", symmetric), tmp_path / "c.toml").committee.exchange == [[1, 2]]
    with pytest.raises(ConfigurationError, match=r"\[committee\] exchange"):  # a symmetry needs indexed couplings
        parse_config(good.replace("members = 2", "members = 2\nexchange = [[1, 2]]"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[committee\] odd_couplings"):
        parse_config(good.replace("members = 2", symmetric.replace("odd_couplings = [[1, 2]]", "odd_couplings = [[2, 1]]")),
                     tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[selection\] gap_share"):
        parse_config(good.replace("[selection]", "[selection]\ngap_share = 1.5"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[committee\] small_gap_weight"):
        parse_config(good.replace("members = 2", "members = 2\nsmall_gap_weight = -1"), tmp_path / "c.toml")
    assert parse_config(good.replace("initial_state = 2", "initial_state = 2\ndriver = 'members'"),
                        tmp_path / "c.toml").dynamics.driver == "members"
    with pytest.raises(ConfigurationError, match=r"\[dynamics\] driver"):
        parse_config(good.replace("initial_state = 2", "initial_state = 2\ndriver = 'median'"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[dynamics\] driver.*diabatic"):  # it averages diabatic Hamiltonians
        parse_config(good.replace("initial_state = 2", "initial_state = 2\ndriver = 'hamiltonian'"), tmp_path / "c.toml")
    assert parse_config(good.replace("members = 2", "members = 2\nhead = 'diabatic'\ndiabatic_coupling_weight = 0.01"),
                        tmp_path / "c.toml").committee.diabatic_coupling_weight == 0.01
    with pytest.raises(ConfigurationError, match=r"\[committee\] diabatic_coupling_weight.*diabatic"):
        parse_config(good.replace("members = 2", "members = 2\ndiabatic_coupling_weight = 0.01"), tmp_path / "c.toml")
    assert parse_config(good.replace("initial_state = 2", "initial_state = 2\nground_state_end_fs = 10"),
                        tmp_path / "c.toml").dynamics.ground_state_end_fs == 10.0
    with pytest.raises(ConfigurationError, match=r"\[dynamics\] ground_state_end_fs"):
        parse_config(good.replace("initial_state = 2", "initial_state = 2\nground_state_end_fs = -1.0"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[thresholds\] upper_cap_energies_ev"):  # a cap below the floor
        parse_config(good.replace("[stopping]", "[thresholds]\nupper_cap_energies_ev = 0.05\n\n[stopping]"), tmp_path / "c.toml")
    metric = "members = 2\ncheckpoint_metric = 'energies_forces'"
    assert parse_config(good.replace("members = 2", metric), tmp_path / "c.toml").committee.checkpoint_metric == "energies_forces"
    with pytest.raises(ConfigurationError, match=r"\[committee\] checkpoint_metric"):
        parse_config(good.replace("members = 2", "members = 2\ncheckpoint_metric = 'dipoles'"), tmp_path / "c.toml")
    # members that keep their final weights train the whole budget; the others stop early after half of it
    last = parse_config(good.replace("members = 2", "members = 2\ncheckpoint_metric = 'last'"), tmp_path / "c.toml")
    warm = member_training(last, tmp_path / "d.h5", tmp_path / "m", 1, previous=tmp_path / "model.pt")
    assert (warm.checkpoint_metric, warm.patience, warm.max_epochs) == ("last", 0, last.committee.warm_epochs)
    stopping = member_training(parse_config(good, tmp_path / "c.toml"), tmp_path / "d.h5", tmp_path / "m", 1, previous=None)
    assert stopping.patience == max(20, last.committee.warm_epochs // 2) and stopping.max_epochs == last.committee.epochs
    diabatic_dipoles = "members = 2\nhead = 'diabatic'\ndipoles = true\ndiabatic_dipoles = true"
    assert parse_config(good.replace("members = 2", diabatic_dipoles), tmp_path / "c.toml").committee.diabatic_dipoles
    with pytest.raises(ConfigurationError, match=r"\[committee\] diabatic_dipoles"):  # they need the diabatic head
        parse_config(good.replace("members = 2", "members = 2\ndipoles = true\ndiabatic_dipoles = true"), tmp_path / "c.toml")
    seam = "members = 2\nhead = 'diabatic'\nseam_loop_weight = 1.0"
    assert parse_config(good.replace("members = 2", seam).replace("[stopping]", "[seam]\npair = [1, 2]\n[stopping]"),
                        tmp_path / "c.toml").seam.pair == [1, 2]
    with pytest.raises(ConfigurationError, match=r"\[committee\] seam_loop_weight.*\[seam\] pair"):  # no loops to train on
        parse_config(good.replace("members = 2", seam), tmp_path / "c.toml")
    for pair in ("[2, 1]", "[1]", "[1, true]"):
        with pytest.raises(ConfigurationError, match=r"\[seam\] pair"):
            parse_config(good.replace("[stopping]", f"[seam]\npair = {pair}\n[stopping]"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[seam\] loops/points"):
        parse_config(good.replace("[stopping]", "[seam]\npair = [1, 2]\npoints = 4\n[stopping]"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[seam\] radius/tolerance_ev/max_shift"):
        parse_config(good.replace("[stopping]", "[seam]\npair = [1, 2]\nmax_shift = 0\n[stopping]"), tmp_path / "c.toml")
    with pytest.raises(ConfigurationError, match=r"\[dynamics\] speed"):
        parse_config(good.replace("initial_state = 2", "initial_state = 2\nspeed = 3"), tmp_path / "c.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(good.replace("initial_state = 2", "initial_state = 7"))
    result = exsnn("campaign", "run", bad, "-o", tmp_path / "out")
    assert result.returncode == 2 and "initial_state" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    bad.write_text(good.replace("members = 2", symmetric.replace("exchange = [[1, 2]]", "exchange = [[0, 1]]")))
    result = exsnn("campaign", "run", bad, "-o", tmp_path / "out")  # S and O are not equivalent atoms
    assert result.returncode == 2 and "[committee] exchange" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    bad.write_text(good.replace("[stopping]", "[seam]\npair = [1, 5]\n[stopping]"))
    result = exsnn("campaign", "run", bad, "-o", tmp_path / "out")  # the oracle has S0-S2
    assert result.returncode == 2 and "[seam] pair" in result.stderr and "S5 does not exist" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    for kinetics, problem in (("S5->S1", "S5 does not exist"), ("S2 to S1", "expected steps")):
        bad.write_text(good.replace("[stopping]", f"[stopping]\nkinetics = '{kinetics}'"))
        result = exsnn("campaign", "run", bad, "-o", tmp_path / "out")  # the oracle has S0-S2
        assert result.returncode == 2 and "[stopping] kinetics" in result.stderr and problem in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_gap_share_spends_part_of_the_budget_in_the_hopping_region() -> None:
    """Six trajectories whose disagreement peaks far from any small gap and whose S2-S1 gap is small (0.05 eV) at other
    steps, where the members agree: without `gap_share` no near-gap frame survives the per-trajectory disagreement
    maxima; with gap_share = 0.5 half of the budget goes to near-gap frames, spread over different trajectories, and the
    rest is still the disagreement selection."""
    from dataclasses import replace

    from exsnn.active.config import SelectionConfig
    from exsnn.active.measure import MEASURES, Thresholds
    from exsnn.active.select import select

    rng = np.random.default_rng(3)
    T, B = 12, 6
    ev = 1 / 27.211386
    positions = np.array([[0.0, 0.0, 0.0], [0.0, -2.4, 1.4], [0.0, 2.4, 1.4]]) + 0.2 * rng.normal(size=(T, B, 3, 3))
    energies = np.tile([0.0, 4.0 * ev, 5.0 * ev], (T, B, 1))
    energies[3:5, :, 2] = 4.05 * ev  # S2 close to S1 at steps 3 and 4 (the active state is S2)
    disagreement = np.full((T, B, 3), 1e-4)
    disagreement[8, :, :] = 1.0  # the members disagree at step 8 only
    record = {"positions": positions, "active": np.full((T, B), 2), "energies": energies, "disagreement": disagreement}
    thresholds = Thresholds(lower={m: 0.01 for m in MEASURES}, upper={m: 10.0 for m in MEASURES}, source="test")
    config = SelectionConfig(budget=4, per_trajectory=1, min_distance=0.0, gap_ev=0.2)
    plain = select(record, np.array([16, 8, 8]), thresholds, config, 4)
    assert sorted(plain["step"].tolist()) == [8, 8, 8, 8]
    shared = select(record, np.array([16, 8, 8]), thresholds, replace(config, gap_share=0.5), 4)
    steps = shared["step"].tolist()
    assert sorted(steps) == [3, 3, 8, 8] or sorted(steps) in ([3, 4, 8, 8], [4, 4, 8, 8])
    near = [b for b, t in zip(shared["trajectory"].tolist(), steps) if t in (3, 4)]
    assert len(set(near)) == 2  # two different trajectories' hopping regions
    np.testing.assert_array_equal(shared["positions"], positions[shared["step"], shared["trajectory"]])
    # frames already labelled seed the near-gap share: trajectories 0-3's hopping regions are known, so it goes to 4 and 5
    labelled = positions[3:5, :4].reshape(-1, 3, 3)
    seeded = select(record, np.array([16, 8, 8]), thresholds, replace(config, gap_share=0.5), 4, labelled)
    near = [b for b, t in zip(seeded["trajectory"].tolist(), seeded["step"].tolist()) if t in (3, 4)]
    assert len(near) == 2 and set(near) <= {4, 5}
    assert sorted(select(record, np.array([16, 8, 8]), thresholds, config, 4, labelled)["step"].tolist()) == [8, 8, 8, 8]


def test_calibrated_thresholds_are_capped_and_say_so() -> None:
    """A committee unsure everywhere calibrates loose thresholds (the SA-4 CH2NH2+ campaign's iteration 12: lower /
    upper 1.16 / 4.64 eV on the energies, 24 eV/Angstrom on the forces); the caps (PyRAI2MD's record / stop values by
    default) bound both and the source says which bound. Thresholds below the caps, and fixed ones, are untouched."""
    from exsnn.active.config import ThresholdConfig
    from exsnn.active.measure import bounded_thresholds
    from exsnn.units import HARTREE_IN_EV

    loose = {"energies": 0.0426, "forces": 0.1154, "couplings": 0.01}  # atomic units
    t = bounded_thresholds(loose, ThresholdConfig(), "calibrated")
    assert t.upper["energies"] * HARTREE_IN_EV == pytest.approx(1.361) and t.lower["energies"] * HARTREE_IN_EV == pytest.approx(0.544)
    assert t.upper["forces"] == pytest.approx(0.15, rel=1e-3) and t.lower["forces"] == pytest.approx(0.06, rel=1e-3)
    assert t.lower["couplings"] == 0.01 and t.upper["couplings"] == pytest.approx(0.04)  # below its caps: 4 x lower
    assert "energies lower" in t.source and "forces upper" in t.source and "couplings" not in t.source
    tight = {"energies": 1e-4, "forces": 1e-4, "couplings": 1e-4}
    assert bounded_thresholds(tight, ThresholdConfig(), "calibrated").lower == tight
    fixed = bounded_thresholds(loose, ThresholdConfig(mode="fixed"), "fixed")
    assert fixed.lower == loose and fixed.upper["energies"] == pytest.approx(4 * 0.0426)


def test_coupling_disagreement_stops_trajectories_only_without_member_runs(shared_data: Path, tmp_path: Path) -> None:
    """Near a conical intersection the members' NAC directions differ however good they are: on the shipped SO2 campaign
    with seed 2, 77 of 200 trajectories of its last iteration (populations within 0.023 of the oracle's) stopped on the
    coupling measure at S2/S1 gaps of 37-133 meV. With member_runs on (default) couplings therefore make candidates but
    do not stop a trajectory; with it off, or when listed in stop_on, they do. Folders written before stop_on existed
    keep stopping on all three."""
    import json

    from exsnn.active.config import parse_config
    from exsnn.active.measure import MEASURES, Thresholds, bounded_thresholds

    good = write_config(tmp_path, shared_data).read_text()
    assert parse_config(good, tmp_path / "c.toml").thresholds.stop_on == ["energies", "forces"]
    off = parse_config(good.replace("duration_fs = 4.0", "duration_fs = 4.0\nmember_runs = false"), tmp_path / "c.toml")
    assert off.thresholds.stop_on == list(MEASURES)
    listed = parse_config(good.replace("[stopping]", "[thresholds]\nstop_on = ['couplings']\n[stopping]"), tmp_path / "c.toml")
    assert listed.thresholds.stop_on == ["couplings"]
    for bad in ("['gradients']", "'energies'", "['forces', 'forces']"):
        with pytest.raises(ConfigurationError, match=r"\[thresholds\] stop_on"):
            parse_config(good.replace("[stopping]", f"[thresholds]\nstop_on = {bad}\n[stopping]"), tmp_path / "c.toml")

    lower = {m: 0.01 for m in MEASURES}
    values = np.array([[0.001, 0.001, 1.0], [1.0, 0.001, 0.001], [0.001, 0.001, 0.001]])  # coupling, energy, none above
    default = bounded_thresholds(lower, parse_config(good, tmp_path / "c.toml").thresholds, "calibrated")
    candidates, stops = default.ratios(values)
    assert (candidates >= 1).tolist() == [True, True, False] and (stops >= 1).tolist() == [False, True, False]
    _, stops = bounded_thresholds(lower, off.thresholds, "calibrated").ratios(values)
    assert (stops >= 1).tolist() == [True, True, False]
    older = {key: value for key, value in default.as_dict().items() if key != "stop_on"}
    _, stops = Thresholds(**json.loads(json.dumps(older))).ratios(values)
    assert (stops >= 1).tolist() == [True, True, False]


def test_labels_above_their_trajectory_total_energy_are_counted() -> None:
    """A dynamics label whose oracle energy of the trajectory's active state lies more than 0.1 eV above the
    trajectory's total energy counts as a hole of the committee; labels of other iterations, without the total energy
    (older records) or within the margin do not."""
    from exsnn.active.report import labels_above_total_energy
    from exsnn.data.frame import Frame, FrameArrays

    def frame(energies: list[float], **tag: object) -> Frame:
        return Frame(numbers=np.array([1, 1]), positions=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.4]]),
                     energies=np.array(energies), provenance={"campaign": {"kind": "dynamics", **tag}})

    ev = 1 / 27.211386
    frames = [frame([-1.0, -0.5], iteration=3, active=1, total_energy=-0.5 - 2 * ev),  # 2 eV above: a hole
              frame([-1.0, -0.5], iteration=3, active=0, total_energy=-0.5 - 2 * ev),  # S0 lies below it
              frame([-1.0, -0.5], iteration=3, active=1, total_energy=-0.5 - 0.05 * ev),  # within the margin
              frame([-1.0, -0.5], iteration=3, active=1),  # no total energy recorded
              frame([-1.0, -0.5], iteration=2, active=1, total_energy=-2.0)]  # another iteration
    arrays = FrameArrays.from_frames(frames, 2)
    assert labels_above_total_energy(arrays, 3) == {"n": 3, "above": 1, "largest_excess_eV": 2.0}
    assert labels_above_total_energy(arrays, 2)["above"] == 1 and labels_above_total_energy(arrays, 4) is None


def test_member_spread_leaves_out_the_members_sampling_noise() -> None:
    """Members that differ by nothing still scatter by their sampling noise (about sqrt(p(1-p)/B) = 0.05 at B = 100);
    with the members' active states per trajectory the committee spread is only what they really differ by."""
    from exsnn.active.decide import member_spread

    rng = np.random.default_rng(3)
    K, T, B = 4, 60, 100
    p_true = np.linspace(0.05, 0.5, T)[:, None]  # S1's population; S0 holds the rest

    def record(offsets: np.ndarray, propensity: float) -> dict[str, np.ndarray]:
        # trajectory b has its own propensity to be in S1 (shared by every member: same initial conditions)
        tilt = propensity * rng.standard_normal(B)
        logit = np.log(p_true / (1 - p_true)) + tilt[None, :]
        p_kb = 1 / (1 + np.exp(-(logit[None] + offsets[:, None, None])))  # (K, T, B)
        active = (rng.random((K, T, B)) < p_kb).astype(np.int8)
        return {"member_active": active, "member_populations": np.stack([(active == s).mean(axis=2) for s in (0, 1)], -1)}

    for propensity in (0.0, 2.0):  # independent members, and members whose trajectories are strongly paired
        same = record(np.zeros(K), propensity)
        raw = same["member_populations"].std(axis=0, ddof=1)[:, 1]
        corrected = member_spread(same, 2)[:, 1]
        assert 0.02 < np.median(raw[T // 2:]) < 0.06  # noise alone
        assert np.median(corrected[T // 2:]) < 0.4 * np.median(raw[T // 2:])
    # members that really differ (logit offsets -0.6 ... 0.6): the corrected spread follows their expected populations
    offsets = np.array([-0.6, -0.2, 0.2, 0.6])
    differ = record(offsets, 0.0)
    expected = (1 / (1 + np.exp(-(np.log(p_true / (1 - p_true)) + offsets)))).std(axis=1, ddof=1)  # (T,)
    corrected = member_spread(differ, 2)[:, 1]
    late = slice(T // 2, None)
    assert abs(np.median(corrected[late]) / np.median(expected[late]) - 1) < 0.25
    # a record without per-trajectory states (older campaigns) keeps the raw spread
    older = {"member_populations": differ["member_populations"]}
    np.testing.assert_allclose(member_spread(older, 2), differ["member_populations"].std(axis=0, ddof=1))


def test_convergence_needs_narrow_population_bands() -> None:
    """Two iterations with the same populations converge only when the bands (trajectory bootstrap and committee
    spread) are narrow: a committee unsure everywhere has bands wide enough to contain any change."""
    from exsnn.active.config import StoppingConfig
    from exsnn.active.decide import decide

    rng = np.random.default_rng(0)
    T, B = 20, 400
    active = np.where(rng.random((T, B)) < np.linspace(0, 0.6, T)[:, None], 1, 2)
    fractions = np.stack([(active == s).mean(1) for s in range(3)], axis=1)  # (T, 3)

    def record(spread: float) -> dict[str, np.ndarray]:
        members = np.stack([fractions + spread * sign * np.array([0.0, 1.0, -1.0]) for sign in (-1, 1, -1, 1)])
        return {"active": active, "status": np.zeros((T, B), dtype=int), "member_populations": members}

    config = StoppingConfig(max_iterations=50, label_budget=10_000)
    narrow = decide(record(0.01), record(0.01), 3, 3, 100, config)
    assert narrow.stop == "converged" and narrow.population_band < 0.1
    wide = decide(record(0.2), record(0.2), 3, 3, 100, config)
    assert wide.stop is None and wide.population_gap <= 0 and wide.population_band > 0.2
    assert decide(record(0.2), record(0.2), 3, 3, 100, StoppingConfig(max_band=0.5)).stop == "converged"
    # a member whose states do not intersect where the oracle's do (the seam check) keeps the campaign going
    disagreeing = decide(record(0.01), record(0.01), 3, 3, 100, config, seams_agree=False)
    assert disagreeing.stop is None and disagreeing.seams_agree is False
    assert decide(record(0.01), record(0.01), 3, 3, 100, config, seams_agree=True).stop == "converged"


def test_a_far_states_energy_spread_makes_candidates_but_does_not_stop_a_trajectory(shared_data: Path, tmp_path: Path) -> None:
    """The energies measure that stops a trajectory counts its active state and the states within stop_window_ev of
    it (default 1 eV): on the shipped SO2 campaign (seed 2, iteration 3) 89% of the energy stops were the S0 spread
    of trajectories running in S1 about 4 eV above it."""
    from exsnn.active.config import parse_config
    from exsnn.active.simulate import window_energy_spread

    ev = 1 / 27.211386
    spread = np.array([[0.2, 0.01, 0.05]] * 2) * ev  # S0 uncertain, S1 and S2 (0.5 eV above S1) well known
    energies = np.array([[0.0, 4.0, 4.5]] * 2) * ev
    in_s1_and_s0 = np.array([1, 0])
    np.testing.assert_allclose(window_energy_spread(spread, energies, in_s1_and_s0, 1.0), [0.05 * ev, 0.2 * ev])
    np.testing.assert_allclose(window_energy_spread(spread, energies, in_s1_and_s0, 0.3), [0.01 * ev, 0.2 * ev])
    np.testing.assert_allclose(window_energy_spread(spread, energies, in_s1_and_s0, 5.0), [0.2 * ev] * 2)  # S0 in reach
    np.testing.assert_allclose(window_energy_spread(spread, energies, np.array([2, 0]), 0.0), [0.05 * ev, 0.2 * ev])
    good = write_config(tmp_path, shared_data).read_text()
    assert parse_config(good, tmp_path / "c.toml").thresholds.stop_window_ev == 1.0
    with pytest.raises(ConfigurationError, match=r"\[thresholds\] stop_window_ev"):
        parse_config(good.replace("[stopping]", "[thresholds]\nstop_window_ev = -1\n[stopping]"), tmp_path / "c.toml")


def test_population_agreement_is_a_simultaneous_band_over_states_and_times() -> None:
    """Two iterations that sample the same dynamics (S2 -> S1 with tau 10 fs, 200 trajectories, 41 times) differ
    somewhere by more than z = 2 pointwise standard errors in about 40% of pairs (3 x 41 correlated comparisons), which
    kept accurate committees from converging; the simultaneous band calls them different at about its 5% level and
    still sees tau 10 against 16 fs."""
    from exsnn.active.config import StoppingConfig
    from exsnn.active.decide import decide

    time_fs = np.arange(0, 20.5, 0.5)
    rng = np.random.default_rng(11)

    def record(tau: float) -> dict[str, np.ndarray]:
        active = np.where(time_fs[:, None] >= rng.exponential(tau, 200)[None], 1, 2)
        return {"time_fs": time_fs, "active": active, "status": np.zeros_like(active)}

    def called_different(tau_before: float, tau_now: float, simultaneous: bool) -> float:
        config = StoppingConfig(simultaneous=simultaneous, max_iterations=99, label_budget=10**6)
        decisions = [decide(record(tau_now), record(tau_before), 3, 3, 0, config) for _ in range(30)]
        assert all(d.population_critical >= 2.0 for d in decisions)
        return float(np.mean([d.population_gap > 0 for d in decisions]))

    assert called_different(10.0, 10.0, simultaneous=False) > 0.2
    assert called_different(10.0, 10.0, simultaneous=True) < 0.12
    assert called_different(10.0, 16.0, simultaneous=True) > 0.8


def test_seam_loops_are_labelled_trained_on_and_checked_every_iteration(shared_data: Path, tmp_path: Path) -> None:
    """With [seam] the oracle's S1/S2 intersection is found from the initial frame of smallest gap, a loop around it
    is labelled (tagged, the oracle's coupling integral +-pi), members train with the seam-loop term, and each
    iteration writes every member's integral around the loop, reported and passed to the decision."""
    from exsnn.active.campaign import Campaign, start
    from exsnn.active.seam import SEAM_CHECK_FILE
    from exsnn.data import read_frames
    from exsnn.data.seam_loops import SEAM_LOOP, read_seam_loops

    text = TINY.replace("members = 2", "members = 2\nhead = 'diabatic'\nseam_loop_weight = 1.0")
    text = text.replace("max_iterations = 2", "max_iterations = 1").replace("[stopping]", "[seam]\npair = [1, 2]\npoints = 12\n[stopping]")
    start(write_config(tmp_path, shared_data, text), tmp_path / "run")
    state = Campaign(tmp_path / "run").run()
    arrays = read_frames(tmp_path / "run" / "data.h5")
    tagged = [json.loads(p) for p in arrays.provenance if SEAM_LOOP in json.loads(p)]
    assert len(tagged) == 12 and all(t["campaign"]["kind"] == "seam_loop" for t in tagged)
    (loop,) = read_seam_loops(tmp_path / "run" / "data.h5")
    assert loop.pair == (1, 2) and abs(loop.integral) == pytest.approx(np.pi, abs=0.2)
    check = json.loads((tmp_path / "run" / "iteration_000" / SEAM_CHECK_FILE).read_text())
    assert check["loops"][0]["oracle_rad"] == pytest.approx(loop.integral) and len(check["loops"][0]["members_rad"]) == 2
    # a member agrees when its integral encloses the intersection and its own seam closes within max_shift of it
    shifts = check["loops"][0]["members_seam_shift_bohr"]
    assert check["all_agree"] == all(abs(m) > np.pi / 2 and s is not None and s <= 0.05
                                     for m, s in zip(check["loops"][0]["members_rad"], shifts))
    assert "seam check" in (tmp_path / "run" / "iteration_000" / "report.md").read_text()
    assert state.history[0]["decision"]["seams_agree"] == check["all_agree"]
    # a member that still disagrees was retrained from scratch as often as allowed ([seam] retrains, default 2); one
    # that agrees was retrained at most that often; each retrained member is the one its last attempt's seed made
    for k, agrees in enumerate(check["loops"][0]["agree"]):
        attempts = check["retrains"].get(str(k), 0)
        assert attempts <= 2 and (agrees or attempts == 2), check
        stored = torch.load(tmp_path / "run" / "iteration_000" / "committee" / f"member_{k}" / "model.pt", weights_only=False)
        assert stored["training"]["seed"] == 3 * 10_000 + k + 1_000_000 * attempts
    metrics = (tmp_path / "run" / "iteration_000" / "committee" / "member_0" / "logs" / "metrics.csv").read_text()
    assert "train_seam_loops" in metrics.splitlines()[0]


def test_lifetimes_asked_for_must_agree_too() -> None:
    """S2 decays to S1 with tau 10 fs in one iteration and 14 fs in the next (100 trajectories each over 60 fs, hop
    times at the exponential's quantiles: deterministic). No single time's populations differ by more than their bands,
    so the populations alone converge; the fitted time constants (14.0 +- 1.5 against 10.0 +- 1.1 fs) do not agree
    within z = 2 combined errors, so with `[stopping] kinetics` the campaign goes on. Equal lifetimes converge."""
    from exsnn.active.config import StoppingConfig
    from exsnn.active.decide import decide

    time_fs = np.arange(0, 60.5, 0.5)
    B = 100

    def record(tau: float) -> dict[str, np.ndarray]:
        hops = -tau * np.log(1 - (np.arange(B) + 0.5) / B)
        active = np.where(time_fs[:, None] >= hops[None], 1, 2)
        return {"time_fs": time_fs, "active": active, "status": np.zeros_like(active)}

    plain = StoppingConfig(max_iterations=50, label_budget=10_000)
    assert decide(record(14.0), record(10.0), 3, 3, 100, plain).stop == "converged"
    asked = StoppingConfig(max_iterations=50, label_budget=10_000, kinetics="S2->S1")
    changed = decide(record(14.0), record(10.0), 3, 3, 100, asked)
    assert changed.stop is None and changed.lifetime_gap_fs > 0
    assert abs(changed.lifetimes["S2->S1"]["tau_fs"] - 14.0) < 1.0 and 0 < changed.lifetimes["S2->S1"]["error_fs"] < 3
    assert not changed.lifetimes["S2->S1"]["longer_than_run"]
    slow = decide(record(200.0), record(200.0), 3, 3, 100, asked).lifetimes["S2->S1"]  # beyond the 60 fs: flagged
    assert slow["longer_than_run"] and slow["error_fs"] > 20
    same = decide(record(10.0), record(10.0), 3, 3, 100, asked)
    assert same.stop == "converged" and same.lifetime_gap_fs <= 0


def test_trajectories_relaxed_to_s0_stay_there_in_populations_and_lifetimes() -> None:
    """A campaign's record stops where a trajectory ended (active -1 after it). Those that ended as RELAXED (after
    `ground_state_end_fs` in S0) count as S0 from then on: populations, bands and fitted lifetimes are those of the
    same ensemble recorded to the end; a trajectory stopped as uncertain is left out as before."""
    from exsnn.active.config import StoppingConfig
    from exsnn.active.decide import decide, population_bands, settled_active
    from exsnn.dynamics.state import RELAXED, UNCERTAIN

    time_fs = np.arange(0, 80.5, 0.5)
    B = 200
    to_s1 = -12.0 * np.log(1 - (np.arange(B) + 0.5) / B)  # S2 -> S1 at 12 fs, then S1 -> S0 at 25 fs
    to_s0 = to_s1 + -25.0 * np.log(1 - ((np.arange(B) * 37) % B + 0.5) / B)
    full = np.where(time_fs[:, None] >= to_s0, 0, np.where(time_fs[:, None] >= to_s1, 1, 2))
    ends = np.searchsorted(time_fs, to_s0 + 10.0)  # the step 10 fs after the arrival in S0
    cut = full.copy()
    status = np.zeros_like(full)
    for b in range(B):
        if ends[b] < len(time_fs):
            cut[ends[b] + 1:, b] = -1
            status[ends[b]:, b] = RELAXED
    assert (status[-1] == RELAXED).sum() > 100
    record = {"time_fs": time_fs, "active": cut, "status": status}
    assert np.array_equal(settled_active(record), full)
    reference = {"time_fs": time_fs, "active": full, "status": np.zeros_like(full)}
    p, se, _ = population_bands(record, 3)
    p_full, se_full, _ = population_bands(reference, 3)
    assert np.allclose(p, p_full) and np.allclose(se, se_full)
    asked = StoppingConfig(max_iterations=50, label_budget=10_000, kinetics="S2->S1->S0")
    taus = decide(record, None, 3, 0, 100, asked).lifetimes
    assert taus == decide(reference, None, 3, 0, 100, asked).lifetimes
    assert abs(taus["S2->S1"]["tau_fs"] - 12.0) < 2.0 and abs(taus["S1->S0"]["tau_fs"] - 25.0) < 4.0
    uncertain = {**record, "status": np.where(status == RELAXED, UNCERTAIN, status)}  # not carried on
    assert np.array_equal(settled_active(uncertain), cut)


@pytest.mark.slow
def test_a_stopped_campaign_goes_on_when_its_rule_no_longer_stops_it(shared_data: Path, tmp_path: Path) -> None:
    """Stopped by its iteration limit, a campaign whose campaign.toml then allows more iterations resumes from the
    selection of its last iteration, labels, and runs the next iteration."""
    out = tmp_path / "campaign"
    config = write_config(tmp_path, shared_data, TINY.replace("max_iterations = 2", "max_iterations = 1"))
    assert exsnn("campaign", "run", config, "-o", out).returncode == 0
    first = json.loads(exsnn("campaign", "status", out, "--json").stdout)
    assert first["stopped"] == "iteration limit" and first["iteration"] == 0 and first["n_labels"] == 16
    copy = out / "campaign.toml"
    copy.write_text(copy.read_text().replace("max_iterations = 1", "max_iterations = 2"))
    # the same folder as shipped: without the full dynamics record, only its populations part
    shipped = tmp_path / "shipped"
    shutil.copytree(out, shipped)
    (shipped / "iteration_000" / "dynamics.npz").unlink()
    assert (shipped / "iteration_000" / "populations.npz").stat().st_size < 0.2 * (out / "iteration_000" / "dynamics.npz").stat().st_size
    resumed = exsnn("campaign", "resume", out)
    assert resumed.returncode == 0 and "going on" in resumed.stderr, resumed.stderr
    second = json.loads(exsnn("campaign", "status", out, "--json").stdout)
    assert second["iteration"] == 1 and second["stopped"] is not None and second["n_labels"] > 16
    assert [h["iteration"] for h in second["history"]] == [0, 1]
    assert all(h["decision"]["population_band"] is not None for h in second["history"]), second["history"]  # reports carry the band
    # the shipped folder decides from the populations, runs iteration 0's ensemble again for the selection, and ends
    # where the full folder did: same labels, same decisions
    resumed = exsnn("campaign", "resume", shipped)
    assert resumed.returncode == 0 and "going on" in resumed.stderr and "running the iteration's ensemble again" in resumed.stderr
    assert dataset_fingerprint(shipped / "data.h5") == dataset_fingerprint(out / "data.h5")
    again = json.loads(exsnn("campaign", "status", shipped, "--json").stdout)
    assert [h["decision"] for h in again["history"]] == [h["decision"] for h in second["history"]]
    # a damaged record: a clear error naming the file, nothing changed
    (shipped / "iteration_001" / "dynamics.npz").unlink()
    (shipped / "iteration_001" / "populations.npz").write_text("not an npz")
    damaged = exsnn("campaign", "resume", shipped)
    assert damaged.returncode == 2 and "iteration_001/populations.npz" in damaged.stderr, damaged.stderr
    assert "Traceback" not in damaged.stderr and dataset_fingerprint(shipped / "data.h5") == dataset_fingerprint(out / "data.h5")


def test_status_and_resume_count_the_labels_of_an_interrupted_initial_phase(shared_data: Path, tmp_path: Path) -> None:
    """During the initial labelling state.json still says 0 labels: status counts the dataset, and resume says how many
    are left (an interrupted campaign that relabels hundreds of geometries must not look as if it starts over)."""
    from exsnn.active.campaign import Campaign, start, status
    from exsnn.active.label import label_structures
    from exsnn.active.sample import initial_geometries

    root = tmp_path / "campaign"
    start(write_config(tmp_path, shared_data, TINY.replace("max_iterations = 2", "max_iterations = 1")), root)
    campaign = Campaign(root)
    positions = initial_geometries(campaign.config, campaign.oracle)
    tags = campaign.initial_tags(len(positions))
    label_structures(campaign.directory.data, campaign.oracle, positions[:3], tags[:3], campaign.metadata, batch=1)
    assert json.loads((root / "state.json").read_text())["n_labels"] == 0
    assert status(root)["n_labels"] == 3 and status(root)["phase"] == "initial"
    resumed = exsnn("campaign", "resume", root)
    assert resumed.returncode == 0, resumed.stderr
    assert "labelling 13 of 16 (the rest labelled before an interruption)" in resumed.stderr, resumed.stderr


def phase_is(output: Path, marker: str) -> bool:
    """True when the campaign's state file says it is about to run `marker` ("ITERATION:PHASE")."""
    try:
        current = json.loads((output / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return f"{current.get('iteration')}:{current.get('phase')}" == marker


def labels_committed(output: Path, at_least: int) -> bool:
    from exsnn.data import count_frames

    try:
        return count_frames(output / "data.h5") >= at_least
    except Exception:  # not created yet, or being replaced: look again
        return False


def run_until_killed(config: Path, output: Path, ready, delay: float) -> None:
    """Start a campaign, wait until `ready(output)` holds, wait `delay` s more and SIGKILL it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "exsnn.cli.main", "campaign", "run", str(config), "-o", str(output)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while not ready(output):
        assert process.poll() is None, "the campaign ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_and_resume(config: Path, folder: Path, kills: dict) -> Iterator[tuple[str, Path]]:
    """For each `where: (ready, delay)` of `kills`: a campaign run killed there (`run_until_killed`), then resumed to
    its end; yields where and the campaign folder."""
    for where, (ready, delay) in kills.items():
        killed = folder / f"killed_{where.replace(' ', '_')}"
        run_until_killed(config, killed, ready, delay)
        resumed = exsnn("campaign", "resume", killed)
        assert resumed.returncode == 0, resumed.stderr
        yield where, killed


@pytest.mark.slow
def test_sigkill_in_every_phase_then_resume_gives_the_uninterrupted_dataset(shared_data: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, shared_data)
    reference = tmp_path / "reference"
    assert exsnn("campaign", "run", config, "-o", reference).returncode == 0
    expected = dataset_fingerprint(reference / "data.h5")
    assert len(expected) > 16 and len({e[0] for e in expected}) == len(expected)  # dynamics labels were added, none twice
    kills = {  # where: (when to kill, extra delay in s)
        "initial labelling": (lambda out: labels_committed(out, 1), 0.0),
        "training": (lambda out: phase_is(out, "0:train"), 1.5),
        "dynamics": (lambda out: phase_is(out, "0:simulate"), 0.3),
        "labelling from dynamics": (lambda out: labels_committed(out, 17), 0.0),  # one label per append (batch = 1)
        "warm-started training": (lambda out: phase_is(out, "1:train"), 0.8),
    }
    for where, killed in kill_and_resume(config, tmp_path, kills):
        assert dataset_fingerprint(killed / "data.h5") == expected, where
        status = json.loads(exsnn("campaign", "status", killed, "--json").stdout)
        assert status["stopped"] is not None and status["n_labels"] == len(expected)


@pytest.mark.slow
def test_sigkill_while_labelling_seam_loops_or_retraining_then_resume_gives_the_uninterrupted_dataset(
        shared_data: Path, tmp_path: Path) -> None:
    text = TINY.replace("members = 2", "members = 2\nhead = 'diabatic'\nseam_loop_weight = 1.0")
    config = write_config(tmp_path, shared_data, text.replace("[stopping]", "[seam]\npair = [1, 2]\npoints = 12\n[stopping]"))
    reference = tmp_path / "reference"
    assert exsnn("campaign", "run", config, "-o", reference).returncode == 0
    expected = dataset_fingerprint(reference / "data.h5")
    retrains = reference / "iteration_000" / "committee" / "seam_retrains.json"
    assert retrains.exists(), "no member was retrained: the retraining kill below would never come"
    kills = {  # where: (when to kill, extra delay in s)
        "seam-loop labelling": (lambda out: labels_committed(out, 18), 0.0),  # two of the loop's labels (batch = 1)
        "retraining": (lambda out: (out / "iteration_000" / "committee" / "seam_retrains.json").exists(), 0.5),
    }
    for where, killed in kill_and_resume(config, tmp_path, kills):
        assert dataset_fingerprint(killed / "data.h5") == expected, where
        assert json.loads((killed / "iteration_000" / "committee" / "seam_retrains.json").read_text()) == json.loads(
            retrains.read_text()), where


@pytest.mark.slow
def test_shipped_lvc_campaign_converges_by_its_rule_and_errors_fall(shared_data: Path, tmp_path: Path) -> None:
    """The ready-to-run SO2 LVC campaign: it stops because the populations converged (not at the iteration limit), and
    on the final held-out test set (labels from dynamics) the last committee is more accurate than the first."""
    from exsnn.active.measure import committee_errors
    from exsnn.active.train import campaign_split
    from exsnn.data import read_frames
    from exsnn.model.potential import ModelPotential

    out = tmp_path / "so2"
    result = exsnn("campaign", "run", PROJECT / "dynamics" / "campaign_so2_lvc.toml", "-o", out)
    assert result.returncode == 0, result.stderr
    status = json.loads(exsnn("campaign", "status", out, "--json").stdout)
    assert status["stopped"] == "converged" and status["converged"], status
    assert status["finished_fraction"] >= 0.95
    assert status["iteration"] >= 1 and status["n_labels"] <= 150
    arrays = read_frames(out / "data.h5")
    test = campaign_split(out / "data.h5", seed=0)["test"]
    numbers = arrays.frame(0).numbers
    first = committee_errors(ModelPotential(out / "iteration_000" / "committee", numbers), arrays, test)
    last = committee_errors(ModelPotential(out / f"iteration_{status['iteration']:03d}" / "committee", numbers), arrays, test)
    for key in ("energies_meV", "forces_meV_per_A"):
        assert np.mean(list(last[key].values())) < np.mean(list(first[key].values())), (key, first[key], last[key])
    report = (out / f"iteration_{status['iteration']:03d}" / "report.md").read_text()
    assert "Test errors" in report and "populations.png" in report
    # its [seam] loop: the oracle's integral is +-pi there, and the converged committee's members all agree with it
    seams = json.loads((out / f"iteration_{status['iteration']:03d}" / "seam_check.json").read_text())
    assert abs(seams["loops"][0]["oracle_rad"]) > 3.0 and seams["all_agree"] and "seam check" in report
    # the members also drove the ensemble alone: their spread widens the bands the convergence rule compares
    from exsnn.active.decide import classical_populations, population_bands

    with np.load(out / f"iteration_{status['iteration']:03d}" / "dynamics.npz") as data:
        record = {key: data[key] for key in data.files}
    stop_energies = record["stop_energies"]  # the part of the energies measure that can stop a trajectory
    recorded = np.isfinite(stop_energies)
    assert recorded[0].all() and np.all(stop_energies[recorded] <= record["disagreement"][..., 0][recorded] + 1e-15)
    hops = record["hop_disagreement"]  # the members' hop probabilities differ somewhere along the dynamics
    assert hops.shape == record["active"].shape and 0 < np.nanmax(hops) <= 1
    np.testing.assert_array_equal(np.isfinite(hops[0]), True)
    assert "hopping out of the active state" in report
    members = record["member_populations"]
    assert members.shape == (4, len(record["time_fs"]), 3)
    for k in range(4):  # each member's populations are its recorded active states counted
        np.testing.assert_allclose(members[k], (record["member_active"][k][..., None] == np.arange(3)).mean(axis=1))
    np.testing.assert_allclose(members.sum(axis=2), 1.0)
    np.testing.assert_allclose(members[:, 0, 2], 1.0)  # every member's trajectories start in S2
    p, combined, spread = population_bands(record, 3)
    _, bootstrap = classical_populations(record["active"], 3)
    assert spread is not None and spread[-1].max() > 0
    np.testing.assert_allclose(combined, np.sqrt(bootstrap**2 + spread**2))
    assert "committee spread" in report
    # every dynamics label carries its trajectory's active state and total energy, and each report counts the labels
    # the oracle puts above that energy (where the committee's surfaces were too low)
    tags = [json.loads(text)["campaign"] for text in arrays.provenance]
    dynamics_tags = [t for t in tags if t["kind"] == "dynamics"]
    assert dynamics_tags and all("active" in t and "total_energy" in t for t in dynamics_tags)
    holes = json.loads((out / "iteration_000" / "summary.json").read_text())["labels_above_total_energy"]
    assert holes["n"] == sum(t["iteration"] == 1 for t in dynamics_tags) and 0 <= holes["above"] <= holes["n"]
    assert "above their trajectory's total energy" in (out / "iteration_000" / "report.md").read_text()
    drift = np.nanmax(np.abs(record["total"] - record["total"][:1]), axis=0)  # conserved along each trajectory
    assert np.isfinite(record["total"][0]).all() and np.nanmax(drift) < 0.2 / 27.2
    # the final committee taken out for production: same predictions, provenance recorded, nothing else replaced
    shipped = tmp_path / "shipped"
    result = exsnn("campaign", "export", out, "-o", shipped)
    assert result.returncode == 0, result.stderr
    origin = json.loads((shipped / "ORIGIN.json").read_text())
    assert origin["iteration"] == status["iteration"] and origin["n_labels"] == status["n_labels"]
    positions = torch.as_tensor(np.stack([arrays.frame(int(k)).positions for k in test]))
    final = ModelPotential(out / f"iteration_{status['iteration']:03d}" / "committee", numbers).compute(positions)
    torch.testing.assert_close(ModelPotential(shipped, numbers).compute(positions).energies, final.energies)
    assert exsnn("campaign", "export", out, "-o", shipped, "--iteration", 0).returncode == 0  # replaces an export
    assert json.loads((shipped / "ORIGIN.json").read_text())["iteration"] == 0
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("mine")
    refused = exsnn("campaign", "export", out, "-o", unrelated)
    assert refused.returncode == 2 and "ORIGIN.json" in refused.stderr and (unrelated / "keep.txt").exists()
    assert exsnn("campaign", "export", out, "-o", shipped, "--iteration", 99).returncode == 2


PYSCF = """
[oracle]
spec = "pyscf:tda-hf/sto-3g,states=3,executor=dask-local:2"
batch = 4
[initial]
file = "{geometries}"
n_frames = 12
[committee]
members = 2
epochs = 10
warm_epochs = 5
width = 8
interactions = 1
batch_size = 8
[dynamics]
file = "{geometries}"
n_trajectories = 4
initial_state = 1
dt_fs = 0.25
duration_fs = 1.0
[selection]
budget = 3
test_every = 2
[thresholds]
mode = "fixed"                  # tiny lower thresholds: every frame is a candidate, the selection is exercised
energies_ev = 1e-6
forces_ev_a = 1e-6
couplings_ev_a = 1e-6
[stopping]
max_iterations = 2
label_budget = 30
"""


@pytest.mark.slow
def test_pyscf_campaign_labels_through_a_local_dask_cluster(tmp_path: Path) -> None:
    """A whole iteration with a real PySCF oracle (TDA-HF/STO-3G water): initial labels, committee, dynamics, selection
    and labels from dynamics computed on a Dask LocalCluster of 2 workers on loopback."""
    from exsnn.data import read_frames

    config = tmp_path / "campaign.toml"
    config.write_text(PYSCF.format(geometries=PROJECT / "datasets" / "h2o_cis_sto3g" / "h2o_cis_sto3g.xyz"))
    out = tmp_path / "water"
    result = exsnn("campaign", "run", config, "-o", out)
    assert result.returncode == 0, result.stderr
    status = json.loads(exsnn("campaign", "status", out, "--json").stdout)
    assert status["stopped"] in ("converged", "iteration limit") and status["iteration"] == 1
    records = [json.loads(p) for p in read_frames(out / "data.h5").provenance]
    from_dynamics = [r for r in records if r["campaign"]["iteration"] == 1]
    assert len(records) == 12 + len(from_dynamics) and 1 <= len(from_dynamics) <= 3
    assert all("PySCF" in r["oracle"] for r in records)
    assert (out / "iteration_001" / "report.md").exists()


def test_pyscf_oracle_samples_from_a_modes_file(tmp_path: Path) -> None:
    """An oracle without harmonic modes of its own (pyscf:) draws the initial set and the dynamics' initial conditions
    from [initial] modes (a modes file of `exsnn frequencies`): Wigner samples centred on its reference geometry with
    the 0 K spread per mode; a modes file of another molecule is refused, naming the key."""
    from exsnn.active.campaign import load_oracle
    from exsnn.active.config import load_config
    from exsnn.active.sample import dynamics_initial_conditions, initial_geometries
    from exsnn.photo.structure import ground_state_settings, harmonic_analysis, optimize_geometry

    numbers = np.array([8, 1, 1])
    settings = ground_state_settings("hf/sto-3g")
    start = np.array([[0.0, 0.0, 0.0], [0.0, 1.43, 1.1], [0.0, -1.43, 1.1]])
    modes = harmonic_analysis(numbers, optimize_geometry(numbers, start, settings).positions, settings)
    modes.write(tmp_path / "modes.json")
    config_path = tmp_path / "campaign.toml"
    config_path.write_text('[oracle]\nspec = "pyscf:tda-hf/sto-3g,states=3"\n[initial]\nn_frames = 400\nmodes = "modes.json"\n'
                           '[dynamics]\nn_trajectories = 400\ninitial_state = 1\n')
    config = load_config(config_path)
    oracle = load_oracle(config)
    assert list(oracle.numbers.numpy()) == [8, 1, 1]
    positions = initial_geometries(config, oracle).numpy()
    q, _ = modes.normal_coordinates(positions)  # (samples, M) sqrt(me) Bohr
    np.testing.assert_allclose(q.var(axis=0) * 2 * modes.frequencies, 1.0, atol=0.2)  # 0 K: var q = 1 / (2 w)
    np.testing.assert_allclose(positions.mean(axis=0), modes.positions, atol=0.03)
    positions, velocities = dynamics_initial_conditions(config, oracle, iteration=1)
    assert positions.shape == velocities.shape == (400, 3, 3)
    config_path.write_text(config_path.read_text().replace("pyscf:tda-hf/sto-3g", "pyscf:tda-hf/sto-3g,charge=1") \
                           .replace('modes = "modes.json"', 'modes = "other.json"'))
    modes.numbers = np.array([8, 1, 9])
    modes.write(tmp_path / "other.json")
    with pytest.raises(ConfigurationError, match=r"\[initial\] modes"):
        initial_geometries(load_config(config_path), oracle)
    (tmp_path / "other.json").unlink()
    with pytest.raises(ConfigurationError, match=r"\[initial\] modes: .*other.json: does not exist"):
        load_oracle(load_config(config_path))


def test_members_of_another_architecture_do_not_warm_start(tmp_path: Path) -> None:
    """After campaign.toml changes the architecture (e.g. to the diabatic head), the previous members cannot start
    the new ones; the same architecture can, also from an iteration before one with another architecture. Model
    files without the newer keys read as their defaults."""
    import torch

    from exsnn.active.train import same_architecture, warm_start_from
    from exsnn.model.network import ArchitectureConfig, MultiStateNetwork, NetworkConfig
    from exsnn.model.training import save_network

    architecture = ArchitectureConfig(n_atom_basis=16, n_interactions=1, cutoff=8.0)
    save_network(MultiStateNetwork(NetworkConfig(**architecture.as_dict(), n_states=3)), tmp_path / "model.pt")
    assert same_architecture(tmp_path / "model.pt", architecture)
    member = tmp_path / "iteration_000" / "committee" / "member_1"
    member.mkdir(parents=True)
    (member / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    first = [tmp_path / "iteration_000"]
    assert warm_start_from(first, 1, architecture, warm_start=True) == member / "model.pt"
    assert warm_start_from(first, 1, architecture, warm_start=False) is None  # [committee] warm_start
    assert warm_start_from(None, 1, architecture, warm_start=True) is None
    assert warm_start_from(first, 1, ArchitectureConfig(n_atom_basis=8, n_interactions=1, cutoff=8.0), warm_start=True) is None
    # an iteration with another architecture in between: the newest earlier member of this one starts it
    other = ArchitectureConfig(n_atom_basis=8, n_interactions=1, cutoff=8.0)
    between = tmp_path / "iteration_001" / "committee" / "member_1"
    between.mkdir(parents=True)
    save_network(MultiStateNetwork(NetworkConfig(**other.as_dict(), n_states=3)), between / "model.pt")
    earlier = [tmp_path / "iteration_001", tmp_path / "iteration_000"]
    assert warm_start_from(earlier, 1, architecture, warm_start=True) == member / "model.pt"
    assert warm_start_from(earlier, 1, other, warm_start=True) == between / "model.pt"
    assert not same_architecture(tmp_path / "model.pt", ArchitectureConfig(n_atom_basis=16, n_interactions=1, cutoff=8.0,
                                                                           head="diabatic"))
    assert not same_architecture(tmp_path / "model.pt", ArchitectureConfig(n_atom_basis=32, n_interactions=1, cutoff=8.0))
    stored = torch.load(tmp_path / "model.pt", weights_only=False)
    for key in ("head", "indexed_couplings", "molecule"):  # a model file from before these options
        del stored["network"][key]
    torch.save(stored, tmp_path / "old.pt")
    assert same_architecture(tmp_path / "old.pt", architecture)


def test_hop_disagreement_is_the_spread_of_the_population_flux_out_of_the_active_state() -> None:
    """Three states, active S1, two members: one with couplings, one without. Over a short step the exact propagation
    (matrix exponential of H = diag(E) - i T) moves |c_1|^2 into S0 and S2; the recorded spread for target j is
    |g_1j| / sqrt(2) with g_1j the share of S1's population that went to S j. Identical members give 0, and flipping
    a pair's sign in both members (another sign convention) changes nothing."""
    from scipy.linalg import expm

    from exsnn.active.measure import hop_disagreement

    generator = np.random.default_rng(4)
    n, N, dt = 3, 3, 0.05
    nacs = torch.as_tensor(generator.normal(size=(3, n, 3)))  # pairs 01, 02, 12
    velocities = torch.as_tensor(generator.normal(size=(1, n, 3)) * 1e-3)
    c = generator.normal(size=N) + 1j * generator.normal(size=N)
    c /= np.linalg.norm(c)
    coefficients = torch.as_tensor(c[None])
    active = torch.tensor([1])
    members = torch.stack([nacs, torch.zeros_like(nacs)])[:, None]  # (K=2, B=1, P, n, 3)
    spread = hop_disagreement(members, velocities, coefficients, active, dt)
    T = np.zeros((N, N))
    for p, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        T[i, j] = float((nacs[p] * velocities[0]).sum())
        T[j, i] = -T[i, j]
    energies = np.array([0.0, 0.1, 0.15])
    flux = []  # population moved 1 -> j over dt, from the exact propagation with only the 1-j coupling switched on
    for j in (0, 2):
        only = np.zeros((N, N))
        only[1, j], only[j, 1] = T[1, j], T[j, 1]
        after = expm(-1j * dt * (np.diag(energies) - 1j * only)) @ c
        flux.append((abs(c[1]) ** 2 - abs(after[1]) ** 2) / abs(c[1]) ** 2)
    # first order in dt (the flux rate times dt), against the exact propagation: equal to O(dt)
    np.testing.assert_allclose(spread[0], max(abs(f) for f in flux) / np.sqrt(2), rtol=1e-2)
    assert spread[0] > 1e-5
    same = torch.stack([nacs, nacs])[:, None]
    assert hop_disagreement(same, velocities, coefficients, active, dt)[0] == 0.0
    flipped = members.clone()
    flipped[:, :, 2] *= -1
    np.testing.assert_allclose(hop_disagreement(flipped, velocities, coefficients, active, dt), spread)
    swap = torch.stack([torch.zeros_like(nacs), nacs])[:, None]
    np.testing.assert_allclose(hop_disagreement(swap, velocities, coefficients, active, dt), spread)


def test_a_moved_campaign_takes_its_relative_paths_from_the_folder_beside_it(tmp_path: Path) -> None:
    """A campaign cloned or moved to another machine, where the folder of its original TOML file (source.json) does
    not exist, resolves the file's relative paths (modes, initial geometries) from the folder that holds it."""
    from exsnn.active.campaign import open_campaign

    shipped = Path(__file__).parents[1] / "datasets/ch2nh2_sacasscf/campaign_sa4"
    moved = tmp_path / "elsewhere" / "campaign_sa4"
    moved.mkdir(parents=True)
    shutil.copy2(shipped / "campaign.toml", moved / "campaign.toml")
    (moved / "source.json").write_text(json.dumps({"config_dir": str(tmp_path / "gone"), "config_name": "campaign_sa4.toml"}))
    _, config = open_campaign(moved)
    assert config.resolve("modes_sa4.json") == tmp_path / "elsewhere" / "modes_sa4.json"


def test_precise_benchmark_config_differs_from_the_shipped_one_only_in_its_stopping_rule() -> None:
    """benchmarks/campaign_so2_lvc_precise.toml measures the shipped campaign at the goal's precision: every section
    equals dynamics/campaign_so2_lvc.toml's but [dynamics] n_trajectories and [stopping]."""
    from dataclasses import asdict, replace

    from exsnn.active.config import load_config

    shipped = load_config(PROJECT / "dynamics" / "campaign_so2_lvc.toml")
    precise = load_config(PROJECT / "benchmarks" / "campaign_so2_lvc_precise.toml")
    assert precise.dynamics.n_trajectories == 1000 and precise.stopping.max_band == 0.025
    same_file = [Path(c.oracle_spec().partition(":")[2]).resolve() for c in (precise, shipped)]
    assert same_file[0] == same_file[1]
    aligned = replace(precise, path=shipped.path, text=shipped.text, oracle=shipped.oracle, stopping=shipped.stopping,
                      dynamics=replace(precise.dynamics, n_trajectories=shipped.dynamics.n_trajectories))
    assert asdict(aligned) == asdict(shipped)


def test_an_iterations_test_errors_are_counted_on_the_frames_it_was_tested_on() -> None:
    """The selection of iteration i joins the held-out set only after i's errors were measured, so the frames behind
    those errors are the test frames labelled up to i: exactly the test split its members were trained beside (the
    committed SA-4 CH2NH2+ campaign, where iteration 16's report counted 116 held-out frames but measured on 104)."""
    from exsnn.active.train import campaign_split, test_frames_of_iteration
    from exsnn.data.splits import load_split

    root = PROJECT / "datasets" / "ch2nh2_sacasscf" / "campaign_sa4"
    for iteration in (0, 8, 16):
        trained_beside = load_split(root / f"iteration_{iteration:03d}" / "committee" / "member_0" / "split.npz")["test"]
        np.testing.assert_array_equal(test_frames_of_iteration(root / "data.h5", iteration), trained_beside)
    assert len(test_frames_of_iteration(root / "data.h5", 16)) < len(campaign_split(root / "data.h5", seed=0)["test"])


@pytest.mark.parametrize("name", ["campaign.toml", "campaign_sa4.toml", "campaign_cas86.toml"])
def test_the_shipped_ch2nh2_campaign_inputs_load_and_their_files_match_the_molecule(name: str) -> None:
    from exsnn.active.config import load_config
    from exsnn.data.geometries import read_structures
    from exsnn.photo.modes import read_modes

    config = load_config(PROJECT / "datasets" / "ch2nh2_sacasscf" / name)
    assert config.oracle_spec().startswith("pyscf:casscf(")
    if config.initial.file is not None:  # the (8,6) campaign: the (6,4) campaign's 620 geometries (make_cas86_start.py)
        from exsnn.data import read_frames
        from exsnn.data.geometries import read_frame_info

        path = config.resolve(config.initial.file)
        structures, info = read_structures(path), read_frame_info(path)
        assert len(structures) == 620 >= config.initial.n_frames
        assert all(list(numbers) == [6, 7, 1, 1, 1, 1] for numbers, _, _ in structures)
        source = [int(i["campaign_sa4_frame"]) for i in info]
        assert sorted(source) == list(range(620)) and source[:84] == list(range(84))  # labelled in this order first
        earlier = read_frames(PROJECT / "datasets" / "ch2nh2_sacasscf" / "campaign_sa4" / "data.h5")
        for k in (0, 83, 84, 619):
            np.testing.assert_allclose(structures[k][1], earlier.frame(source[k]).positions, atol=1e-8)
    if config.initial.modes is not None:
        assert list(read_modes(config.resolve(config.initial.modes)).numbers) == [6, 7, 1, 1, 1, 1]


def test_failed_labels_are_retried_in_place_and_one_process_at_a_time_works_on_a_campaign(shared_data: Path,
                                                                                          tmp_path: Path) -> None:
    """`exsnn campaign retry-failed` labels the frames whose oracle call failed with the oracle as it is now, in place
    (order, campaign tags and the other frames unchanged). A campaign directory has one working process at a time: a
    second one (retry-failed or resume) exits 2 naming the holder, and the lock goes with the holder's SIGKILL."""
    from exsnn.active.campaign import Campaign, start, status
    from exsnn.active.label import label_structures
    from exsnn.active.retry import rewrite_frames
    from exsnn.active.sample import initial_geometries
    from exsnn.data import Frame, read_frames

    root = tmp_path / "campaign"
    config = write_config(tmp_path, shared_data)
    start(config, root)
    campaign = Campaign(root)
    positions = initial_geometries(campaign.config, campaign.oracle)
    tags = campaign.initial_tags(len(positions))
    label_structures(campaign.directory.data, campaign.oracle, positions[:4], tags[:4], campaign.metadata, batch=2)
    frames = read_frames(campaign.directory.data).frames()
    good = frames[1]
    frames[1] = Frame(numbers=good.numbers, positions=good.positions, multiplicity=1,
                      provenance={**good.provenance, "failure": "the oracle failed at this structure (non-finite labels)"})
    rewrite_frames(campaign.directory.data, frames)
    before = dataset_fingerprint(campaign.directory.data)
    assert before[1][2] is None and status(root)["n_failed"] == 1

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom exsnn.active.layout import campaign_lock\n"
                               "with campaign_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n", str(root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for command in (("campaign", "retry-failed", root), ("campaign", "resume", root),
                        ("campaign", "run", config, "-o", root, "--overwrite")):
            refused = exsnn(*command)
            assert refused.returncode == 2, refused.stderr
            assert f"in use by another exsnn process (pid {holder.pid})" in refused.stderr and "Traceback" not in refused.stderr
            assert dataset_fingerprint(campaign.directory.data) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    retried = exsnn("campaign", "retry-failed", root)
    assert retried.returncode == 0, retried.stderr
    assert "1 of 1 failed labels labelled now" in retried.stdout
    after = read_frames(campaign.directory.data)
    fingerprint = dataset_fingerprint(campaign.directory.data)
    assert [fingerprint[k] for k in (0, 2, 3)] == [before[k] for k in (0, 2, 3)]  # the others untouched, same order
    assert fingerprint[1][:2] == before[1][:2]  # same tag, same geometry
    again = after.frame(1)
    np.testing.assert_allclose(again.energies, good.energies, atol=1e-10)  # the oracle's labels there
    np.testing.assert_allclose(again.forces, good.forces, atol=1e-10)
    assert again.provenance["retried"]["labelled"] is True and "failure" not in again.provenance
    assert status(root)["n_failed"] == 0
    nothing = exsnn("campaign", "retry-failed", root)
    assert nothing.returncode == 0 and "0 of 0 failed labels" in nothing.stdout
