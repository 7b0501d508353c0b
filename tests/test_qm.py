"""PySCF labelling: physics of the labels, failure handling, resumable parallel labelling (process pool and Dask)."""

from __future__ import annotations

import ast
import graphlib
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

import exsnn.qm
from exsnn.data import read_frames
from exsnn.qm.excited import excited_states
from exsnn.qm.labelling import label_file
from exsnn.qm.overlap_nacs import cis_wavefunction, state_overlaps
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.settings import parse_method

WATER = np.array([[0.01, 0.02, 0.2217], [0.0, 1.3809, -0.8567], [0.02, -1.4309, -0.9267]])
NUMBERS = np.array([8, 1, 1])
CIS = parse_method("tda-hf/sto-3g", n_states=3, nacs="overlap", etf=False)


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
            summary = label_file(
                source,
                output,
                parse_method("tda-hf/sto-3g", n_states=3, nacs="overlap"),
                executor=f"dask:{address}",
                progress=False,
            )
            killer.join()
            assert pids[0] not in client.run(os.getpid).values()  # the worker really died (the nanny started another)
    assert summary.labelled == 10 and summary.failed == 0
    indices = sorted(json.loads(p)["input_index"] for p in read_frames(output).provenance)
    assert indices == list(range(10))  # every geometry exactly once


def test_pyscf_potential_in_point(tmp_path: Path) -> None:
    xyz = tmp_path / "water.xyz"
    xyz.write_text("3\nwater\nO 0.0 0.0 0.117\nH 0.0 0.757 -0.469\nH 0.0 -0.757 -0.469\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exsnn.cli.main",
            "point",
            "--potential",
            "pyscf:tda-hf/sto-3g,states=3",
            str(xyz),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    frame = json.loads(result.stdout)[0]
    direct = label_geometry(
        NUMBERS, np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]]) * 1.8897261254578281, CIS
    )
    np.testing.assert_allclose(frame["energies"], direct.energies, atol=1e-7)
    np.testing.assert_allclose(np.array(frame["gradients"]), -direct.forces.transpose(1, 0, 2), atol=1e-6)
    assert np.shape(frame["nacs"]) == (3, 3, 3)
    collapsed = tmp_path / "collapsed.xyz"
    collapsed.write_text("3\nH on O\nO 0.0 0.0 0.117\nH 0.0 0.0 0.117\nH 0.0 -0.757 -0.469\n")
    failed = subprocess.run(
        [sys.executable, "-m", "exsnn.cli.main", "point", "--potential", "pyscf:tda-hf/sto-3g", str(collapsed)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2 and "failed at frame(s) [0]" in failed.stderr and "PySCF failed" in failed.stderr
    from exsnn.qm.potential import parse_spec

    spec = parse_spec("tddft-b3lyp/6-31g*,states=4,charge=1,nacs=overlap,etf=0,stability=0")
    options = spec.settings
    assert (options.excited, options.xc, options.n_states, options.charge) == ("tddft", "b3lyp", 4, 1)
    assert (options.nacs, options.etf, options.check_stability, spec.executor) == ("overlap", False, False, "serial")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# exsnn.qm as a one-way chain: each module may import only modules before it (labelling and potential are two ends)
QM_CHAIN = [
    "settings",
    "validation",
    "results",
    "scf",
    "excited",
    "overlap_nacs",
    "analytic_nacs",
    "casscf",
    "pyscf_backend",
    "labelling",
    "potential",
]


def exsnn_imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(imported exsnn module, the import node) for every import statement anywhere in `tree`; `from exsnn.qm
    import scf` counts as importing exsnn.qm.scf."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names if alias.name.startswith("exsnn")]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports hide the chain"
            if (node.module or "").startswith("exsnn"):
                found += [(node.module, node)] + [(f"{node.module}.{alias.name}", node) for alias in node.names]
    return found


def test_exsnn_qm_imports_form_a_one_way_chain_at_top_level() -> None:
    folder = Path(exsnn.qm.__file__).parent
    modules = sorted(path.stem for path in folder.glob("*.py") if path.stem != "__init__")
    assert modules == sorted(QM_CHAIN), "a new exsnn.qm module needs its place in QM_CHAIN"
    graph: dict[str, set[str]] = {}
    for module in modules:
        tree = ast.parse((folder / f"{module}.py").read_text())
        imports = exsnn_imports(tree)
        graph[module] = {
            name.split(".")[2] for name, _ in imports if name.startswith("exsnn.qm.") and name.split(".")[2] in QM_CHAIN
        }
        top_level = {id(node) for node in tree.body}
        inside = sorted({name for name, node in imports if id(node) not in top_level})
        assert not inside, f"exsnn.qm.{module} imports {inside} inside a function: import exsnn modules at the top"
        for other in graph[module]:
            assert QM_CHAIN.index(other) < QM_CHAIN.index(module), (
                f"exsnn.qm.{module} imports exsnn.qm.{other}, later in the chain"
            )
    assert "potential" not in graph["labelling"] and "labelling" not in graph["potential"]
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError if any module imports itself back
    assert set(order) == set(modules)
    assert (
        graph["scf"] == {"results", "settings"}
        and "pyscf_backend" in graph["labelling"]
        and "pyscf_backend" in graph["potential"]
    )
    assert not exsnn_imports(ast.parse((folder / "__init__.py").read_text()))


CH2NH2 = (
    np.array(
        [
            [0.0, 0.0, 0.0],
            [0.0, 0.02, 1.28],
            [0.01, 0.94, -0.54],
            [0.0, -0.94, -0.55],
            [0.02, 0.87, 1.85],
            [0.0, -0.87, 1.86],
        ]
    )
    * 1.8897261254578281
)


def tight_states(numbers, positions, method, charge, n_states=3):
    """Settings and states converged tightly enough for finite-difference references at 1e-6."""
    tight = parse_method(
        method,
        n_states=n_states,
        charge=charge,
        nacs="overlap",
        etf=False,
        fd_step=2.5e-4,
        scf_conv_tol=1e-14,
        scf_conv_tol_grad=1e-10,
    )
    states = excited_states(numbers, positions, tight)
    states.mf.conv_tol_cpscf = 1e-12
    return tight, states


def ground_with_etf(states) -> np.ndarray:
    from exsnn.qm.analytic_nacs import ground_excited_nacs

    return ground_excited_nacs(states, etf=True)


def all_gradients(states) -> np.ndarray:
    """Total gradients (n, N, 3) of S0 and every kept root."""
    from exsnn.qm.analytic_nacs import excited_gradient_tool

    td_gradient = excited_gradient_tool(states)
    excited = [td_gradient.kernel(state=k) for k in range(1, len(states.energies))]
    return np.stack([states.mf.nuc_grad_method().kernel(), *excited], axis=1)


@pytest.mark.parametrize(
    "numbers, positions, method, charge, atol",
    [
        (NUMBERS, WATER, "tda-hf/sto-3g", 0, 1e-5),
        (NUMBERS, WATER, "tda-hf/6-31g", 0, 1e-5),
        (np.array([6, 7, 1, 1, 1, 1]), CH2NH2, "tda-hf/sto-3g", 1, 1e-5),
        # full TDHF (RPA): pseudo-wavefunction overlaps with the response metric as the reference
        (NUMBERS, WATER, "tddft-hf/6-31g", 0, 1e-5),
        (np.array([6, 7, 1, 1, 1, 1]), CH2NH2, "tddft-hf/sto-3g", 1, 1e-5),
        # DFT: the analytic couplings differ from the finite-difference ones by the XC-grid noise (~1e-5)
        pytest.param(NUMBERS, WATER, "tda-b3lyp/sto-3g", 0, 5e-5, marks=pytest.mark.slow),
        pytest.param(NUMBERS, WATER, "tddft-b3lyp/sto-3g", 0, 5e-5, marks=pytest.mark.slow),
    ],
    ids=[
        "H2O-CIS-STO-3G",
        "H2O-CIS-6-31G",
        "CH2NH2+-CIS-STO-3G",
        "H2O-TDHF-6-31G",
        "CH2NH2+-TDHF-STO-3G",
        "H2O-TDA-B3LYP",
        "H2O-TDDFT-B3LYP",
    ],
)
def test_analytic_nacs_of_every_pair_match_overlap_finite_differences(numbers, positions, method, charge, atol) -> None:
    from exsnn.qm.analytic_nacs import analytic_nacs
    from exsnn.qm.overlap_nacs import basis_translation_nacs

    tight, states = tight_states(numbers, positions, method, charge)
    gradients = all_gradients(states)
    plain = analytic_nacs(states, gradients, etf=False)
    reference = label_geometry(numbers, positions, tight)  # 6n displaced calculations, wavefunction overlaps
    assert reference.failure is None and plain.nacs.shape == reference.nacs.shape == (len(numbers), 3, 3)
    np.testing.assert_allclose(plain.nacs, reference.nacs, atol=atol)  # pairs 01, 02 and 12
    if method.startswith("tddft"):  # the de-excitation amplitudes matter at this tolerance
        assert np.abs(states.amplitudes()[1]).max() > 1e-2
    gaps = np.array([states.energies[j] - states.energies[i] for i, j in [(0, 1), (0, 2), (1, 2)]])
    np.testing.assert_allclose(plain.numerators, plain.nacs * gaps[None, :, None], atol=1e-12)
    with_etf = analytic_nacs(states, gradients, etf=True)
    # ETF reference: the overlap NACs minus the antisymmetric frozen-orbital overlap derivative (finite differences)
    np.testing.assert_allclose(
        with_etf.nacs, reference.nacs - basis_translation_nacs(numbers, positions, tight, states), atol=atol
    )
    # electron-translation factors: no net translation (exact for HF; DFT integration grids leave ~1e-5)
    assert np.abs(with_etf.nacs.sum(axis=0)).max() < (1e-9 if "hf" in method else 5e-5)
    assert np.abs(plain.nacs.sum(axis=0)).max() > 1e-2  # without them the sum over atoms does not vanish
    np.testing.assert_allclose(with_etf.nacs[:, :2], ground_with_etf(states), atol=1e-12)


@pytest.mark.parametrize("method", ["tda-hf/sto-3g", "tda-b3lyp/sto-3g", "tddft-b3lyp/sto-3g"])
def test_excited_pair_code_with_equal_states_is_the_gradient_and_antisymmetric(method) -> None:
    from exsnn.qm.analytic_nacs import excited_gradient_tool, excited_pair_numerator, transition_gradient

    _, states = tight_states(NUMBERS, WATER, method, 0, n_states=4)
    gradients = all_gradients(states)
    td_gradient = excited_gradient_tool(states)
    for state in (1, 2, 3):  # h_II + grad E_0 is PySCF's gradient of state I
        np.testing.assert_allclose(
            transition_gradient(states, td_gradient, gradients, state, state) + gradients[:, 0],
            states.td.nuc_grad_method().kernel(state=state),
            atol=1e-6,
        )  # PySCF's own Z-vector tolerance
    E = states.energies
    for etf in (True, False):
        d12 = excited_pair_numerator(states, td_gradient, gradients, 1, 2, etf) / (E[2] - E[1])
        d21 = excited_pair_numerator(states, td_gradient, gradients, 2, 1, etf) / (E[1] - E[2])
        np.testing.assert_allclose(d21, -d12, atol=1e-9)
        assert np.abs(d12).max() > 1e-2


def test_analytic_nacs_are_the_default() -> None:
    for method in ("tda-hf/sto-3g", "tddft-hf/sto-3g"):
        result = label_geometry(NUMBERS, WATER, parse_method(method, n_states=3))
        assert result.failure is None and result.nacs.shape == (3, 3, 3)
        assert np.abs(result.nacs.sum(axis=0)).max() < 1e-9  # ETF by default
    fallback = label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=3, nacs="overlap"))
    # the finite-difference fallback applies ETF too (default SCF tolerance and step: agreement to ~1e-4)
    assert np.abs(fallback.nacs.sum(axis=0)).max() < 2e-4
    np.testing.assert_allclose(
        fallback.nacs, label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=3)).nacs, atol=2e-4
    )


def test_states_follow_a_reference_geometry_root_flips_and_phases() -> None:
    from exsnn.qm.pyscf_backend import reference_wavefunction

    settings = parse_method("tda-hf/sto-3g", n_states=3, nacs="analytic")
    nearby = WATER + 0.02 * np.random.default_rng(1).normal(size=WATER.shape)
    reference = reference_wavefunction(NUMBERS, WATER, settings)
    followed = label_geometry(NUMBERS, nearby, settings, reference=reference)
    assert followed.root_flips == [] and min(followed.reference_overlaps) > 0.9
    flipped = reference_wavefunction(NUMBERS, WATER, settings)
    flipped.amplitudes[0] *= -1  # the reference's S1 with the other sign: S1's couplings change sign here too
    opposite = label_geometry(NUMBERS, nearby, settings, reference=flipped)
    np.testing.assert_allclose(
        opposite.nacs[:, [0, 2]], -followed.nacs[:, [0, 2]], atol=1e-6
    )  # 01, 12 (two separate runs)
    np.testing.assert_allclose(opposite.nacs[:, 1], followed.nacs[:, 1], atol=1e-6)  # 02
    swapped = reference_wavefunction(NUMBERS, WATER, settings)
    swapped.amplitudes = swapped.amplitudes[::-1].copy()  # a reference whose S1 and S2 have exchanged characters
    flips = label_geometry(NUMBERS, nearby, settings, reference=swapped).root_flips
    assert [flip[:2] for flip in flips] == [[1, 2], [2, 1]] and min(flip[2] for flip in flips) > 0.9


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
    energies = [
        label_geometry(numbers, p, parse_method("casscf(2,2)/sto-3g", n_states=2, charge=1, nacs="none")).energies
        for p in (plus, minus)
    ]
    np.testing.assert_allclose(result.forces[1, :, 2], -(energies[0] - energies[1]) / (2 * h), atol=1e-6)
    with pytest.raises(ValueError, match="analytic"):
        parse_method("casscf(2,2)/sto-3g", n_states=2, nacs="overlap")


def test_label_cli_with_a_reference_records_overlaps_and_near_degenerate_couplings(tmp_path: Path) -> None:
    from exsnn.qm.labelling import near_degenerate_pairs

    source = geometries_file(tmp_path, 2)
    output = tmp_path / "out.h5"
    command = [
        sys.executable,
        "-m",
        "exsnn.cli.main",
        "label",
        str(source),
        "-o",
        str(output),
        "--method",
        "tda-hf/sto-3g",
        "--reference",
        str(source),
        "--executor",
        "serial",
        "--no-progress",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    provenance = [json.loads(p) for p in read_frames(output).provenance]
    first = next(p for p in provenance if p["input_index"] == 0)
    np.testing.assert_allclose(first["reference_overlaps"], 1.0, atol=1e-8)  # frame 0 is the reference itself
    assert first["root_flips"] == [] and all(len(p["reference_overlaps"]) == 3 for p in provenance)
    hydrogen = tmp_path / "h2.xyz"
    hydrogen.write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    wrong = subprocess.run(command[:-6] + ["--reference", str(hydrogen)], capture_output=True, text=True)
    assert wrong.returncode == 2 and "atoms differ" in wrong.stderr
    # h = gap * d is kept for close pairs (threshold raised here so that every adjacent pair counts)
    labels = label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=3))
    close = near_degenerate_pairs(labels.__dict__, threshold=1.0)
    assert [pair[:2] for pair in close] == [[0, 1], [1, 2]]
    gap = labels.energies[2] - labels.energies[1]
    np.testing.assert_allclose(close[1][2], gap)
    np.testing.assert_allclose(close[1][3], gap * labels.nacs[:, 2], atol=1e-12)


def test_scf_falls_back_to_a_previous_density() -> None:
    from exsnn.qm.scf import build_molecule, run_scf

    settings = parse_method("tda-hf/sto-3g", n_states=3)
    nearby = excited_states(NUMBERS, WATER * 1.02, settings).density()
    broken_guess = np.full_like(nearby, np.nan)
    mf, attempts = run_scf(
        build_molecule(NUMBERS, WATER, settings), settings, guess_dm=broken_guess, previous_dm=nearby
    )
    assert attempts == ["default: ValueError", "previous density: converged"]
    np.testing.assert_allclose(mf.e_tot, excited_states(NUMBERS, WATER, settings).energies[0], atol=1e-9)


def test_on_the_fly_surface_hopping_with_pyscf_conserves_energy(tmp_path: Path) -> None:
    import h5py

    from exsnn.dynamics.fssh import FINISHED, RUNNING

    lines = H2O_DATASET.read_text().splitlines()
    (tmp_path / "start.xyz").write_text("\n".join(lines[:10]) + "\n")  # two geometries (Bohr, declared), at rest
    drifts = []
    for dt in (0.1, 0.05):  # fs; water on S2 is steep here: 0.1 Hartree of kinetic energy within 2 fs
        (tmp_path / "run.toml").write_text(
            '[potential]\nspec = "pyscf:tda-hf/sto-3g,states=3"\n'
            '[initial_conditions]\nsampling = "file"\nfile = "start.xyz"\nn_trajectories = 2\ninitial_state = 2\nseed = 3\n'
            f'[integrator]\ndt_fs = {dt}\nduration_fs = 0.4\ndecoherence = "edc"\nrescale = "nac"\n'
            '[output]\nfile = "run.h5"\nrecord_every = 1\ngeometry_every = 4\ncheckpoint_every = 4\n'
        )
        command = [
            sys.executable,
            "-m",
            "exsnn.cli.main",
            "dynamics",
            str(tmp_path / "run.toml"),
            "--no-progress",
            "--overwrite",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        with h5py.File(tmp_path / "run.h5") as h5:
            total, populations, status = h5["steps/total"][()], h5["steps/populations"][()], h5["steps/status"][()]
        assert np.all(status[:-1] == RUNNING) and np.all(status[-1] == FINISHED)
        np.testing.assert_allclose(populations.sum(axis=-1), 1.0, atol=1e-5)
        assert populations[-1, :, 2].min() < 1.0 - 1e-6  # the analytic NACs move population out of S2
        drifts.append(np.abs(total - total[0]).max())
    # velocity Verlet on exact gradients: the energy error falls as dt^2 (inconsistent forces would leave a floor)
    assert 3.0 < drifts[0] / drifts[1] < 5.0 and drifts[1] < 1e-4


def test_internally_unstable_scf_solution_is_followed_to_the_ground_state() -> None:
    import re

    from pyscf import gto, scf

    # square H4 (side 2 Bohr) in 6-31G: the D2h-symmetric RHF solution with a_g and b_2u doubly occupied is a saddle
    # point. Which solution PySCF's default guess reaches there changes with its version (the degenerate orbitals make
    # it sensitive to rounding), so the SCF starts from that solution's density, converged under symmetry
    square = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    hydrogens = np.array([1, 1, 1, 1])
    symmetric = scf.RHF(gto.M(atom=[("H", tuple(p)) for p in square], unit="Bohr", basis="6-31g", symmetry="D2h", verbose=0))
    symmetric.irrep_nelec = {"Ag": 2, "B2u": 2, "B3u": 0}
    symmetric.kernel()
    assert symmetric.converged
    saddle_density = symmetric.make_rdm1()
    unchecked = label_geometry(hydrogens, square, parse_method("tda-hf/6-31g", n_states=2, check_stability=False),
                               guess_dm=saddle_density)
    assert unchecked.failure is not None and "instability" in unchecked.failure  # a negative TDA root, recorded
    result = label_geometry(hydrogens, square, parse_method("tda-hf/6-31g", n_states=2), guess_dm=saddle_density)
    assert result.failure is None and result.energies[1] - result.energies[0] > 1e-3
    followed = [note for note in result.notes if note.startswith("internal instability")]
    assert len(followed) == 1
    saddle, minimum = (float(e) for e in re.findall(r"E = (-?\d+\.\d+)", followed[0]))
    assert abs(saddle - symmetric.e_tot) < 1e-7 and minimum < saddle - 0.02 and abs(result.energies[0] - minimum) < 1e-7


def test_an_rhf_that_stays_unstable_fails_a_tddft_label_but_still_starts_sa_casscf() -> None:
    """TDA/TDDFT labels need a stable reference; SA-CASSCF only starts from the RHF orbitals and optimises them, so
    there an RHF that following does not stabilise is kept as the start (noted) instead of failing the label."""
    from pyscf import gto, scf

    from exsnn.qm.results import QMFailure
    from exsnn.qm.scf import build_molecule, follow_internal_instabilities

    square = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 2.0, 0.0]])
    symmetric = scf.RHF(gto.M(atom=[("H", tuple(p)) for p in square], unit="Bohr", basis="6-31g", symmetry="D2h", verbose=0))
    symmetric.irrep_nelec = {"Ag": 2, "B2u": 2, "B3u": 0}
    symmetric.kernel()  # the saddle point of the test above
    settings = parse_method("tda-hf/6-31g", n_states=2)
    mol = build_molecule(np.ones(4, dtype=int), square, settings)
    mf = scf.RHF(mol)
    mf.kernel(dm0=symmetric.make_rdm1())
    with pytest.raises(QMFailure, match="internally unstable"):
        follow_internal_instabilities(mf, mol, settings, [], max_follow=0)
    attempts: list[str] = []
    kept = follow_internal_instabilities(mf, mol, settings, attempts, max_follow=0, required=False)
    assert kept is mf and attempts == ["still internally unstable: kept as the start of the orbital optimisation"]
