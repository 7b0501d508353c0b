"""The `pyscf:` potential: per-trajectory memory keyed by the engine's trajectory ids, only the labels asked for
(counted from what the calculations report), hop refreshes on the saved SCF + TD, and structures on parallel workers
that give the serial results (real PySCF, real worker processes)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_parallel import command_line, descendants, gone

from exsnn.errors import ConfigurationError
from exsnn.potentials.spec import load_potential
from exsnn.qm.potential import PySCFPotential, parse_spec
from exsnn.qm.pyscf_backend import label_geometry
from exsnn.qm.settings import parse_method

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WATER = np.array([[0.01, 0.02, 0.2217], [0.0, 1.3809, -0.8567], [0.02, -1.4309, -0.9267]])
NUMBERS = np.array([8, 1, 1])
H4 = np.array([1, 1, 1, 1])
SQUARE = np.array([[0.0, 0.0, 0.0], [2.6, 0.0, 0.0], [2.6, 2.6, 0.0], [0.0, 2.6, 0.0]])  # Bohr
RECTANGLE = np.array([[0.0, 0.0, 0.0], [2.08, 0.0, 0.0], [2.08, 3.25, 0.0], [0.0, 3.25, 0.0]])


def tensor(*geometries: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.stack(geometries))


def ids(*values: int) -> torch.Tensor:
    return torch.tensor(values)


# other geometries whose converged densities may lead the SCF at SQUARE * 1.001 elsewhere than SQUARE's own density
OTHER_STARTS = (RECTANGLE, SQUARE * 0.999, SQUARE * 1.002)


@pytest.mark.parametrize("options", ["", ",workers=2"], ids=["serial", "two-workers"])
def test_scf_guesses_follow_trajectory_ids_not_positions_in_the_batch(options: str) -> None:
    """Square H4 in 6-31G has several RHF solutions 0.04 Hartree apart. Without the stability check (stability=0) the
    starting density decides which one the SCF finds, so the energy shows whose density was used. Which start reaches
    which solution changes with PySCF's version (square H4's degenerate orbitals make it sensitive to rounding: with
    2.14 the rectangle's density leads elsewhere than the square's own, with 2.15 a slightly smaller square's does),
    so the test takes the first of OTHER_STARTS that leads elsewhere."""
    settings = parse_method("tda-hf/6-31g", n_states=1, check_stability=False)

    def from_density_of(start: np.ndarray, target: np.ndarray) -> float:
        return label_geometry(H4, target, settings, guess_dm=label_geometry(H4, start, settings).density).energies[0]

    own = from_density_of(SQUARE, SQUARE * 1.001)
    other_start = next((start for start in OTHER_STARTS if abs(from_density_of(start, SQUARE * 1.001) - own) > 0.02), None)
    assert other_start is not None, "no start leads to another SCF solution: the test cannot tell densities apart"
    fresh = label_geometry(H4, SQUARE * 1.001, settings).energies[0]
    potential = load_potential(f"pyscf:tda-hf/6-31g,states=1,stability=0{options}", numbers=H4)
    try:
        potential.compute(tensor(other_start, SQUARE), states=ids(0, 0), trajectories=ids(7, 3))
        # the engine asks for trajectory 3 alone (position 0 of the last batch was trajectory 7's geometry)
        moved = potential.compute(tensor(SQUARE * 1.001), states=ids(0), trajectories=ids(3))
        np.testing.assert_allclose(moved.energies[0, 0], own, atol=1e-7)  # from its own density, not trajectory 7's
        # trajectory 7 continues from its own density
        np.testing.assert_allclose(potential.compute(tensor(other_start * 1.001), states=ids(0), trajectories=ids(7)).energies[0, 0],
                                   from_density_of(other_start, other_start * 1.001), atol=1e-7)
        # unrelated structures (no ids): nothing carries over, PySCF's own guess
        alone = potential.compute(tensor(SQUARE * 1.001), states=ids(0))
        np.testing.assert_allclose(alone.energies[0, 0], fresh, atol=1e-7)
    finally:
        potential.close()


def test_a_trajectory_starts_its_sa_casscf_from_its_own_previous_orbitals() -> None:
    """Along a path, each SA-CASSCF starts from the trajectory's own converged orbitals (one continuous solution), and
    gives what a fresh start from the RHF orbitals gives where both land on the same solution."""
    from exsnn.qm.pyscf_backend import run_structure_task

    numbers = np.array([6, 7, 1, 1, 1, 1])
    planar = np.array([[0, 0, 0], [0, 0, 1.28], [0, 0.94, -0.54], [0, -0.94, -0.54], [0, 0.87, 1.85],
                       [0, -0.87, 1.85]]) * 1.8897261246257702
    potential = load_potential("pyscf:casscf(2,2)/sto-3g,states=2,charge=1,nacs=none", numbers=numbers)
    potential.compute(tensor(planar), states=ids(1), trajectories=ids(5))
    memory = potential._memory[5]
    assert memory.orbitals is not None and memory.orbitals.shape[0] == memory.density.shape[0]
    moved = planar + 0.02
    task, _ = potential._task(numbers, moved, memory, [1], False)
    assert task.guess_orbitals is memory.orbitals
    result = run_structure_task(task)
    assert any(note.startswith("SA-CASSCF from the orbitals of a nearby geometry (singlet CI): converged")
               for note in result.notes)
    np.testing.assert_allclose(result.energies, potential.compute(tensor(moved), states=ids(1)).energies[0], atol=1e-7)


@pytest.mark.parametrize("method", ["tda-hf/sto-3g", "tda-b3lyp/sto-3g", "tddft-b3lyp/sto-3g"])
def test_a_saved_solution_gives_the_gradients_and_nacs_of_the_original_without_solving_again(method: str) -> None:
    settings = parse_method(method, n_states=3)
    original = label_geometry(NUMBERS, WATER, settings, gradients=[1], nacs=False, keep_states=True)
    assert original.failure is None and original.gradient_states == [1] and np.isnan(original.forces[:, [0, 2]]).all()
    again = label_geometry(NUMBERS, WATER, settings, saved=original.saved)
    assert "scf_and_excited" not in again.timings and again.gradient_states == [0, 1, 2]
    full = label_geometry(NUMBERS, WATER, settings)  # a new SCF + TD from PySCF's guess: the same states
    np.testing.assert_allclose(again.energies, full.energies, atol=1e-10)
    np.testing.assert_allclose(again.forces, full.forces, atol=1e-8)
    np.testing.assert_allclose(again.nacs, full.nacs, atol=1e-8)
    np.testing.assert_allclose(again.forces[:, 1], original.forces[:, 1], atol=1e-12)


def test_potential_computes_only_what_is_asked_and_refreshes_a_hop_on_the_saved_solution() -> None:
    settings = parse_method("tda-hf/sto-3g", n_states=3)  # analytic NACs: S1-S2 needs every state's gradient
    full = label_geometry(NUMBERS, WATER, settings)  # every gradient and NAC, the reference
    potential = PySCFPotential(settings, NUMBERS)
    R, T = tensor(WATER), ids(5)
    counters = lambda: (potential.scf_runs, potential.gradient_evaluations, potential.nac_evaluations)  # noqa: E731

    out = potential.compute(R, states=ids(1), nacs=False, trajectories=T)  # a step without couplings
    assert out.nacs is None and out.all_forces is None and counters() == (1, 1, 0)  # one SCF + TD, one gradient
    np.testing.assert_allclose(out.forces[0].numpy(), full.forces[:, 1], atol=1e-9)
    np.testing.assert_allclose(out.energies[0].numpy(), full.energies, atol=1e-10)

    hop = potential.compute(R.clone(), states=ids(2), nacs=False, trajectories=T)  # hop refresh: same id, same geometry
    assert counters() == (1, 2, 0)  # no new SCF + TD: one more gradient on the saved solution
    np.testing.assert_allclose(hop.forces[0].numpy(), full.forces[:, 2], atol=1e-9)
    np.testing.assert_allclose(hop.energies.numpy(), out.energies.numpy(), atol=0)

    potential.compute(R, states=ids(2), nacs=False, trajectories=T)
    assert counters() == (1, 2, 0)  # asked again: answered from memory

    coupled = potential.compute(R, states=ids(1), nacs=True, trajectories=T)  # NACs asked at the same geometry
    assert potential.scf_runs == 1 and potential.nac_evaluations == 1
    np.testing.assert_allclose(coupled.nacs[0].numpy(), full.nacs.transpose(1, 0, 2), atol=1e-9)

    potential.compute(R, states=ids(1), nacs=False, trajectories=ids(6))  # another trajectory: its own calculation
    assert potential.scf_runs == 2
    nudged = R.clone()
    nudged[0, 0, 0] = float(np.nextafter(WATER[0, 0], np.inf))  # one bit away: a new geometry
    potential.compute(nudged, states=ids(1), nacs=False, trajectories=T)
    assert potential.scf_runs == 3

    two = PySCFPotential(parse_method("tda-hf/sto-3g", n_states=2), NUMBERS)  # the engine's pattern: a step with NACs,
    step = two.compute(R, states=ids(1), nacs=True, trajectories=T)  # then a hop refresh without
    assert (two.scf_runs, two.gradient_evaluations, two.nac_evaluations) == (1, 1, 1)  # S0-S1 needs no gradient
    refreshed = two.compute(R, states=ids(0), nacs=False, trajectories=T)
    assert (two.scf_runs, two.gradient_evaluations) == (1, 2)
    reference = label_geometry(NUMBERS, WATER, parse_method("tda-hf/sto-3g", n_states=2))
    np.testing.assert_allclose(refreshed.forces[0].numpy(), reference.forces[:, 0], atol=1e-9)
    np.testing.assert_allclose(step.nacs[0].numpy(), reference.nacs.transpose(1, 0, 2), atol=1e-9)


def test_structures_on_two_local_workers_equal_the_serial_results_and_the_pool_is_kept() -> None:
    serial = load_potential("pyscf:tda-hf/sto-3g,states=3", numbers=NUMBERS)
    parallel = load_potential("pyscf:tda-hf/sto-3g,states=3,workers=2", numbers=NUMBERS)
    assert "executor local:2" in parallel.describe()
    rng = np.random.default_rng(4)
    geometries = WATER + 0.05 * rng.normal(size=(3, 3, 3))
    trajectories, states = ids(0, 1, 2), ids(2, 1, 2)
    workers = []
    try:
        for step in range(2):
            positions = torch.as_tensor(geometries + 0.01 * step)
            a = serial.compute(positions, states=states, all_forces=True, nacs=True, trajectories=trajectories)
            b = parallel.compute(positions, states=states, all_forces=True, nacs=True, trajectories=trajectories)
            for name in ("energies", "forces", "all_forces", "nacs"):
                np.testing.assert_allclose(getattr(b, name).numpy(), getattr(a, name).numpy(), atol=1e-9, err_msg=name)
            workers.append({pid for pid in descendants(os.getpid()) if "spawn_main" in command_line(pid)})
            # a hop refresh on the workers: the saved solution travels with the task
            hop = parallel.compute(positions[1:2], states=ids(0), nacs=False, trajectories=ids(1))
            np.testing.assert_allclose(hop.forces[0].numpy(), a.all_forces[1, 0].numpy(), atol=1e-9)
        assert (parallel.scf_runs, parallel.gradient_evaluations) == (serial.scf_runs, serial.gradient_evaluations) == (6, 18)
        assert len(workers[0]) == 2 and workers[0] == workers[1]  # the same two processes for both steps
    finally:
        parallel.close()
    assert all(gone(pid) for pid in workers[0])


def test_potential_spec_options() -> None:
    assert parse_spec("tda-hf/sto-3g").executor == "serial"
    assert parse_spec("tda-hf/sto-3g,workers=3").executor == "local:3"
    assert parse_spec("tda-hf/sto-3g,executor=dask-local,workers=2").executor == "dask-local:2"
    spec = parse_spec("tda-hf/sto-3g,executor=dask:tcp://127.0.0.1:8786,max_attempts=5")
    assert (spec.executor, spec.max_attempts) == ("dask:tcp://127.0.0.1:8786", 5)
    for bad in ("tda-hf/sto-3g,workers=0", "tda-hf/sto-3g,executor=local:3,workers=2", "tda-hf/sto-3g,executor=mpi",
                "tda-hf/sto-3g,states=three", "tda-hf/sto-3g,colour=red", "tda-hf/sto-3g,executor=serial,workers=2"):
        with pytest.raises(ConfigurationError):
            parse_spec(bad)


def test_on_the_fly_surface_hopping_on_two_workers_writes_the_serial_ensemble(tmp_path) -> None:
    """One trajectory per worker process, one ensemble file: the same numbers as the run in this process."""
    import subprocess
    import sys

    import h5py
    from conftest import H2O_DATASET

    lines = H2O_DATASET.read_text().splitlines()
    (tmp_path / "start.xyz").write_text("\n".join(lines[:10]) + "\n")  # two geometries at rest
    runs = {}
    for name, options in (("serial", ""), ("workers", ",workers=2")):
        (tmp_path / f"{name}.toml").write_text(
            f'[potential]\nspec = "pyscf:tda-hf/sto-3g,states=3{options}"\n'
            '[initial_conditions]\nsampling = "file"\nfile = "start.xyz"\nn_trajectories = 2\ninitial_state = 2\nseed = 3\n'
            '[integrator]\ndt_fs = 0.1\nduration_fs = 0.3\ndecoherence = "edc"\nrescale = "nac"\n'
            f'[output]\nfile = "{name}.h5"\nrecord_every = 1\ngeometry_every = 1\ncheckpoint_every = 4\n')
        command = [sys.executable, "-m", "exsnn.cli.main", "dynamics", str(tmp_path / f"{name}.toml"), "--no-progress", "--overwrite"]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        with h5py.File(tmp_path / f"{name}.h5") as h5:
            runs[name] = {key: h5[f"steps/{key}"][()] for key in ("total", "populations", "status")}
    for key, values in runs["serial"].items():
        np.testing.assert_allclose(runs["workers"][key], values, atol=1e-9, err_msg=key)
    assert runs["serial"]["populations"][-1, :, 2].min() < 1.0 - 1e-7  # the couplings did something


def test_a_campaign_frame_records_why_the_oracle_failed() -> None:
    """A label the oracle cannot make is kept as a frame without labels whose provenance says why (PySCF's reason),
    so that failures can be counted by cause and retried after a fix."""
    from exsnn.active.label import oracle_frames

    numbers = np.array([6, 7, 1, 1, 1, 1])
    planar = np.array([[0, 0, 0], [0, 0, 1.28], [0, 0.94, -0.54], [0, -0.94, -0.54], [0, 0.87, 1.85],
                       [0, -0.87, 1.85]]) * 1.8897261246257702
    twisted = planar.copy()
    twisted[4:, :2] = twisted[4:, :2] @ np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    oracle = load_potential("pyscf:casscf(2,2)/sto-3g,states=3,charge=1,casscf_max_cycle=1,nacs=none", numbers=numbers)
    try:
        with pytest.warns(UserWarning, match="PySCF failed at structure 0: SA-CASSCF did not converge"):
            frames = oracle_frames(oracle, tensor(twisted), [{"iteration": 1, "index": 0}])
    finally:
        oracle.close()
    assert frames[0].energies is None
    assert frames[0].provenance["failure"].startswith("SA-CASSCF did not converge"), frames[0].provenance
    assert oracle.last_failures and oracle.last_failures[0] == frames[0].provenance["failure"]
