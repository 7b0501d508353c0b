"""The parts of the surface-hopping engine on their own (electronic propagation, hops, decoherence, settings), and the
engine's handling of failed recomputations, ended trajectories, trajectory ids and batch independence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from exsnn.dynamics import decoherence as decoherence_module
from exsnn.dynamics.decoherence import Decoherence, DecoherenceInput
from exsnn.dynamics.electronic import PairTable, auto_substeps, propagate_coefficients, step_uniforms
from exsnn.dynamics.fssh import ELECTRONIC_FAILURE, FINISHED, LEFT_BOX, RUNNING, FSSHEngine, kinetic_energy
from exsnn.dynamics.hopping import attempt_hops, choose_targets, forced_hops_to_ground
from exsnn.dynamics.scattering import sample_initial_conditions
from exsnn.dynamics.settings import FSSHSettings, OutputSettings
from exsnn.errors import ConfigurationError, ExsnnError
from exsnn.potentials.tully import TullyPotential
from exsnn.units import EV_IN_HARTREE


# ---------------------------------------------------------------------------------------------- electronic propagation
def exact_step(c: torch.Tensor, energies: torch.Tensor, couplings: torch.Tensor, dt: float, n_states: int) -> torch.Tensor:
    """exp(-i H dt) c for a constant H = diag(E) - i T (T antisymmetric from pair values), by diagonalisation."""
    T = np.zeros((n_states, n_states))
    for p, (i, j) in enumerate(PairTable(n_states).pairs):
        T[i, j], T[j, i] = couplings[p], -couplings[p]
    H = np.diag(energies.numpy()) - 1j * T
    w, U = np.linalg.eigh(H)
    return torch.as_tensor(U @ (np.exp(-1j * w * dt) * (U.conj().T @ c.numpy())))


def test_propagation_converges_to_the_exact_propagator_at_second_order() -> None:
    """Constant energies and couplings: the split-operator step approaches exp(-i H dt) c as n_sub^-2, unitarily."""
    N, dt = 3, 40.0
    table = PairTable(N)
    E = torch.tensor([[0.0, 0.012, 0.03]], dtype=torch.float64)
    T = torch.tensor([[0.004, -0.002, 0.006]], dtype=torch.float64)
    c0 = torch.tensor([[0.3 + 0.1j, 0.8 - 0.2j, 0.0 + 0.4j]], dtype=torch.complex128)
    c0 = c0 / torch.linalg.vector_norm(c0)
    exact = exact_step(c0[0], E[0], T[0], dt, N)
    errors = []
    for n_sub in (4, 8, 16):
        c, _ = propagate_coefficients(c0, torch.tensor([0]), E, E, T, T, torch.tensor([n_sub]), dt, table)  # E_0 = 0
        assert abs(torch.linalg.vector_norm(c).item() - 1.0) < 1e-14
        errors.append(torch.linalg.vector_norm(c[0] - exact).item())
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.05) and errors[1] / errors[2] == pytest.approx(4.0, rel=0.05)


def test_two_states_propagate_exactly_and_their_substeps_bound_the_remaining_error() -> None:
    """Two states: one substep is exp(-i H dt) c to round-off for a constant H; for H changing linearly over the step
    the error falls as n_sub^-4 (fourth-order Magnus exponential) and the automatic count keeps it below the angle^3
    it is sized by, over random steps of every strength; the hopping probability is the active state's relative
    population loss. Two-state coefficients carry no phase of the mean energy (a global phase: populations, coherences and
    hops do not depend on it), so the references are propagated with the energies measured from their mean."""

    def exact(c: torch.Tensor, E: torch.Tensor, T: torch.Tensor, tau: float) -> torch.Tensor:
        return exact_step(c, E - E.mean(), T, tau, 2)

    table = PairTable(2)
    dt = 40.0
    E = torch.tensor([[0.0, 0.012]], dtype=torch.float64)
    T = torch.tensor([[0.004]], dtype=torch.float64)
    c0 = torch.tensor([[0.3 + 0.1j, 0.8 - 0.2j]], dtype=torch.complex128)
    c0 = c0 / torch.linalg.vector_norm(c0)
    c, g = propagate_coefficients(c0, torch.tensor([0]), E, E, T, T, torch.tensor([1]), dt, table)
    assert torch.linalg.vector_norm(c[0] - exact(c0[0], E[0], T[0], dt)).item() < 1e-14
    lost = (c0[0, 0].abs() ** 2 - c[0, 0].abs() ** 2) / c0[0, 0].abs() ** 2
    assert lost.item() > 0.1 and g[0, 1].item() == pytest.approx(lost.item(), rel=1e-12) and g[0, 0].item() == 0.0

    E_new, T_new = torch.tensor([[0.0, 0.004]], dtype=torch.float64), torch.tensor([[0.012]], dtype=torch.float64)
    reference = c0[0]
    fine = 4000  # many exact mid-point steps of the linearly changing H
    for k in range(fine):
        f = (k + 0.5) / fine
        reference = exact(reference, E[0] + f * (E_new - E)[0], T[0] + f * (T_new - T)[0], dt / fine)
    errors = []
    for n_sub in (1, 2, 4):
        c, _ = propagate_coefficients(c0, torch.tensor([0]), E, E_new, T, T_new, torch.tensor([n_sub]), dt, table)
        assert abs(torch.linalg.vector_norm(c).item() - 1.0) < 1e-14
        errors.append(torch.linalg.vector_norm(c[0] - reference).item())
    assert errors[0] / errors[1] == pytest.approx(16.0, rel=0.1) and errors[1] / errors[2] == pytest.approx(16.0, rel=0.1)
    angle, worst, counts = 0.05, 0.0, []
    rng = np.random.default_rng(0)
    for _ in range(60):  # random steps from nearly free to strongly coupled and fast-changing
        scale, step = 10 ** rng.uniform(-4, -1.3), float(rng.choice([5.0, 20.0, 40.0]))
        E0 = torch.tensor([[0.0, rng.normal() * scale]], dtype=torch.float64)
        E1 = E0 + torch.as_tensor(rng.normal(size=(1, 2)) * scale * 0.3)
        T0 = torch.tensor([[rng.normal() * scale]], dtype=torch.float64)
        T1 = T0 + rng.normal() * scale * 0.5
        n_auto = auto_substeps(E0, E1, T0, T1, step, angle)
        c, _ = propagate_coefficients(c0, torch.tensor([0]), E0, E1, T0, T1, n_auto, step, table)
        reference = c0[0]
        for k in range(400):
            f = (k + 0.5) / 400
            reference = exact(reference, E0[0] + f * (E1 - E0)[0], T0[0] + f * (T1 - T0)[0], step / 400)
        worst = max(worst, torch.linalg.vector_norm(c[0] - reference).item())
        counts.append(int(n_auto))
    assert worst < angle**3 and max(counts) > 2 and counts.count(1) > 30


def test_hopping_probability_is_the_fewest_switches_flux() -> None:
    """Over a short step g_aj = 2 Re(c_a* c_j) T_aj dt / |c_a|^2 (Tully 1990, Eq. 19), clipped at zero."""
    table = PairTable(2)
    E = torch.tensor([[0.0, 0.01], [0.0, 0.01]], dtype=torch.float64)
    T = torch.tensor([[0.003], [0.003]], dtype=torch.float64)
    c0 = torch.tensor([[math.sqrt(0.7), math.sqrt(0.3)], [math.sqrt(0.7), -math.sqrt(0.3)]], dtype=torch.complex128)
    dt = 0.05
    _, g = propagate_coefficients(c0, torch.tensor([0, 0]), E, E, T, T, torch.tensor([1, 1]), dt, table)
    # from state 0 the flux into 1 is 2 Re(c0* c1) T_01 dt / |c0|^2: positive for the first, negative (no hop) for the second
    expected = 2 * math.sqrt(0.7 * 0.3) * 0.003 * dt / 0.7
    assert g[0, 0].item() == 0.0 and g[1, 0].item() == 0.0
    assert g[0, 1].item() == pytest.approx(expected, rel=1e-3) and g[1, 1].item() == 0.0


def test_each_trajectory_takes_its_own_substeps_bit_for_bit() -> None:
    """A trajectory's coefficients and probabilities are the same bits alone and in a batch whose other members need
    hundreds of substeps (the batch is sorted by substep count and the short ones stop early)."""
    g = torch.Generator().manual_seed(1)
    B, N, dt = 9, 3, 20.0
    table = PairTable(N)
    E_old = torch.rand((B, N), generator=g, dtype=torch.float64) * 0.1
    E_new = E_old + 0.002 * torch.randn((B, N), generator=g, dtype=torch.float64)
    scale = torch.logspace(-5, -0.5, B, dtype=torch.float64)[:, None]  # from nearly uncoupled to strongly coupled
    T_old = torch.randn((B, N * (N - 1) // 2), generator=g, dtype=torch.float64) * scale
    T_new = T_old * 1.1
    c = torch.randn((B, N), generator=g, dtype=torch.complex128)
    c = c / torch.linalg.vector_norm(c, dim=1, keepdim=True)
    active = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    n_sub = auto_substeps(E_old, E_new, T_old, T_new, dt, 0.05)
    assert n_sub.min() < 5 and n_sub.max() > 50
    batch_c, batch_g = propagate_coefficients(c, active, E_old, E_new, T_old, T_new, n_sub, dt, table)
    for b in range(B):
        k = slice(b, b + 1)
        alone_c, alone_g = propagate_coefficients(c[k], active[k], E_old[k], E_new[k], T_old[k], T_new[k], n_sub[k], dt, table)
        assert torch.equal(alone_c, batch_c[k]) and torch.equal(alone_g, batch_g[k]), b
    assert (torch.linalg.vector_norm(batch_c, dim=1) - 1).abs().max() < 1e-13


def test_step_uniforms_depend_on_seed_and_step_only() -> None:
    a = step_uniforms(3, 10, 50)
    assert np.array_equal(a[:20], step_uniforms(3, 10, 20)) and not np.array_equal(a, step_uniforms(3, 11, 50))
    with pytest.raises(ConfigurationError, match="seed"):
        step_uniforms(-1, 1, 5)


# ---------------------------------------------------------------------------------------------- hops
def test_targets_follow_the_cumulative_probabilities() -> None:
    probabilities = torch.tensor([[0.0, 0.2, 0.3], [0.0, 0.2, 0.3], [0.0, 0.2, 0.3], [0.1, 0.0, 0.0]], dtype=torch.float64)
    zeta = torch.tensor([0.1, 0.35, 0.6, 0.05], dtype=torch.float64)
    assert choose_targets(probabilities, zeta).tolist() == [1, 2, -1, 0]


def test_forced_hop_moves_to_the_ground_state_conserving_energy() -> None:
    masses = torch.tensor([2000.0], dtype=torch.float64)
    v = torch.tensor([[[0.004, 0.0, 0.0]], [[0.004, 0.0, 0.0]]], dtype=torch.float64)
    E = torch.tensor([[0.0, 0.005], [0.0, 0.05]], dtype=torch.float64)
    c = torch.tensor([[0.6, 0.8], [0.6, 0.8]], dtype=torch.complex128)
    active = torch.tensor([1, 1])
    v_new, active_new, c_new, forced = forced_hops_to_ground(v, active, c, E, masses, gap=0.01, allowed=torch.tensor([True, True]))
    assert forced.tolist() == [0] and active_new.tolist() == [0, 1] and c_new[0].tolist() == [1, 0]
    before = kinetic_energy(v, masses)[0] + E[0, 1]
    assert (kinetic_energy(v_new, masses)[0] + E[0, 0]).item() == pytest.approx(before.item(), abs=1e-16)
    assert torch.equal(v_new[1], v[1]) and torch.equal(c_new[1], c[1])
    _, _, _, none = forced_hops_to_ground(v, active, c, E, masses, gap=0.01, allowed=torch.tensor([False, True]))
    assert len(none) == 0


def test_grad_v_check_with_failed_target_forces_reports_failure() -> None:
    masses = torch.tensor([2000.0], dtype=torch.float64)
    v = torch.tensor([[[0.002, 0.0, 0.0]]], dtype=torch.float64)  # kinetic 0.004 < gap 0.01: frustrated
    d = torch.tensor([[[[1.0, 0.0, 0.0]]]], dtype=torch.float64)
    outcome = attempt_hops(v, torch.tensor([0]), torch.tensor([1]), torch.tensor([[-0.005, 0.005]], dtype=torch.float64), d,
                           torch.tensor([[[0.001, 0.0, 0.0]]], dtype=torch.float64), masses, PairTable(2).pair_index,
                           frustrated_mode="reflect_gradv",
                           target_forces=lambda rows, states: torch.full((len(rows), 1, 3), math.nan, dtype=torch.float64))
    assert outcome.frustrated.item() and outcome.failed.item() and torch.equal(outcome.velocities, v)


# ---------------------------------------------------------------------------------------------- decoherence interface
class CollapseToActive(Decoherence):
    """A test scheme: all population on the active state after every step."""

    name = "collapse"

    def correct(self, step: DecoherenceInput) -> torch.Tensor:
        return torch.nn.functional.one_hot(step.active, step.coefficients.shape[1]).to(step.coefficients.dtype)


def test_a_decoherence_scheme_plugs_in_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="decoherence"):
        FSSHSettings(dt=1.0, n_steps=1, decoherence="collapse")
    monkeypatch.setitem(decoherence_module.SCHEMES, "collapse", CollapseToActive)
    engine = FSSHEngine(TullyPotential("tully1"), FSSHSettings(dt=2.0, n_steps=5, decoherence="collapse"))
    positions = torch.zeros((3, 1, 3), dtype=torch.float64)
    velocities = torch.full_like(positions, 0.0)
    velocities[:, 0, 0] = 0.01  # through the coupling region: without the scheme population would flow
    state = engine.initial_state(positions, velocities, torch.zeros(3, dtype=torch.long))
    engine.run(state)
    populations = state.coefficients.abs() ** 2
    assert torch.equal(populations, torch.nn.functional.one_hot(state.active, 2).double())


def test_schemes_table_and_edc_are_selected_by_settings() -> None:
    assert {"edc", "none"} <= set(decoherence_module.SCHEMES)
    engine = FSSHEngine(TullyPotential("tully1"), FSSHSettings(dt=1.0, n_steps=1, decoherence="edc"))
    assert isinstance(engine.decoherence, decoherence_module.EnergyBasedDecoherence)
    engine.settings.decoherence = "none"
    assert isinstance(engine.decoherence, decoherence_module.NoDecoherence)


# ---------------------------------------------------------------------------------------------- settings
def test_defaults_live_in_the_dataclasses() -> None:
    settings = FSSHSettings(dt=1.0, n_steps=1)
    assert settings.max_energy_drift == pytest.approx(0.2 * EV_IN_HARTREE, rel=1e-15)  # SHARC's 0.2 eV
    assert OutputSettings() == OutputSettings(record_every=1, geometry_every=10, checkpoint_every=100)


@pytest.mark.parametrize("options, field", [
    ({"decoherence": "bogus"}, "decoherence"), ({"dt": -1.0}, "dt"), ({"dt": math.nan}, "dt"), ({"box": -3.0}, "box"),
    ({"edc_c": math.inf}, "edc_c"), ({"substeps": 0}, "substeps"), ({"seed": -2}, "seed"),
    ({"max_energy_drift": 0.0}, "max_energy_drift"),
])
def test_impossible_settings_are_configuration_errors(options: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        FSSHSettings(**{"dt": 1.0, "n_steps": 1, **options})
    assert raised.value.where == field and isinstance(raised.value, ExsnnError)


@pytest.mark.parametrize("name", ["record_every", "geometry_every", "checkpoint_every"])
def test_output_intervals_below_one_are_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        OutputSettings(**{name: 0})


# ---------------------------------------------------------------------------------------------- engine: failures
class FailingGradients(TullyPotential):
    """Tully 1 whose gradient of `state`, computed alone (the engine's refresh after a hop, forced hop or grad-V
    check: nacs=False), fails as a failed electronic-structure calculation is reported: NaN rows."""

    def __init__(self, model: str, state: int) -> None:
        super().__init__(model)
        self.failing_state = state

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None):
        out = super().compute(positions, states=states, all_forces=all_forces, nacs=nacs, trajectories=trajectories)
        if not nacs and states is not None:
            broken = states == self.failing_state
            out.energies = torch.where(broken[:, None], torch.nan, out.energies)
            out.forces = torch.where(broken[:, None, None], torch.nan, out.forces)
        return out


def run_watching_failures(engine: FSSHEngine, state) -> tuple[int, list]:
    """Run; check that every trajectory that ends in ELECTRONIC_FAILURE does so at its last good step (positions,
    velocities, active state and coefficients of the step before). Returns the failures and all hop events."""
    failures, events = 0, []
    while state.step < engine.settings.n_steps and bool((state.status == RUNNING).any()):
        before = {name: getattr(state, name).clone() for name in ("positions", "velocities", "active", "coefficients", "status")}
        hops = engine.step(state)
        events.append(hops)
        new = (state.status == ELECTRONIC_FAILURE) & (before["status"] != ELECTRONIC_FAILURE)
        for name in ("positions", "velocities", "active", "coefficients"):
            assert torch.equal(getattr(state, name)[new], before[name][new]), name
        assert not bool(torch.isin(hops.trajectory, torch.nonzero(new)[:, 0]).any())  # their hops did not happen
        failures += int(new.sum())
    for name in ("positions", "velocities", "energies", "forces", "nacs"):
        assert bool(torch.isfinite(getattr(state, name)).all()), name
    return failures, events


def test_failed_forces_after_a_hop_end_the_trajectory_at_its_last_good_step() -> None:
    engine = FSSHEngine(FailingGradients("tully1", state=1), FSSHSettings(dt=2.0, n_steps=4000, box=16.0, seed=5, decoherence="none"))
    positions, velocities = sample_initial_conditions(60, 20.0, 2000.0, 5)
    state = engine.initial_state(positions, velocities, torch.zeros(60, dtype=torch.long))
    failures, events = run_watching_failures(engine, state)
    assert failures > 5  # at k = 20 about half the trajectories hop up: each of those fails in the force refresh
    assert bool((state.active == 0).all())
    assert set(state.status.tolist()) == {LEFT_BOX, ELECTRONIC_FAILURE}
    assert sum(int((~e.frustrated).sum()) for e in events) == 0  # no hop up was ever carried out


def test_failed_forces_after_a_forced_hop_end_the_trajectory() -> None:
    engine = FSSHEngine(FailingGradients("tully1", state=0), FSSHSettings(dt=1.0, n_steps=3, forced_hop_gap=0.02, decoherence="none"))
    positions = torch.zeros((2, 1, 3), dtype=torch.float64)
    positions[:, 0, 0] = torch.tensor([0.0, -30.0])  # gap 0.01 at the crossing: forced; 0.02 far away: not
    velocities = torch.zeros_like(positions)
    velocities[:, 0, 0] = 0.005
    state = engine.initial_state(positions, velocities, torch.tensor([1, 1]))
    failures, events = run_watching_failures(engine, state)
    assert failures == 1 and state.status.tolist() == [ELECTRONIC_FAILURE, FINISHED]
    assert state.active.tolist() == [1, 1] and sum(len(e.trajectory) for e in events) == 0


def test_failed_target_forces_of_the_grad_v_check_end_the_trajectory() -> None:
    def ensemble(frustrated: str) -> tuple[FSSHEngine, object]:
        settings = FSSHSettings(dt=4.0, n_steps=3000, box=12.0, seed=2, frustrated=frustrated, decoherence="none")
        engine = FSSHEngine(FailingGradients("tully1", state=1), settings)
        positions, velocities = sample_initial_conditions(60, 6.0, 2000.0, 3)  # too slow to reach S1: hops frustrated
        return engine, engine.initial_state(positions, velocities, torch.zeros(60, dtype=torch.long))

    engine, state = ensemble("reflect")  # the same trajectories without the grad-V check: frustrated hops, no failure
    _, events = run_watching_failures(engine, state)
    frustrated = sum(int(e.frustrated.sum()) for e in events)
    assert frustrated >= 3 and not bool((state.status == ELECTRONIC_FAILURE).any())
    engine, state = ensemble("reflect_gradv")
    failures, _ = run_watching_failures(engine, state)
    assert failures >= 1


class FailingFarAway(TullyPotential):
    """Tully 1 that fails beyond x = 20 Bohr (outside the box of 16), and for x > 0 where y > 0.5."""

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None):
        out = super().compute(positions, states=states, all_forces=all_forces, nacs=nacs, trajectories=trajectories)
        x, y = positions[:, 0, 0], positions[:, 0, 1]
        broken = (x > 20.0) | ((x > 0) & (y > 0.5))
        out.energies = torch.where(broken[:, None], torch.nan, out.energies)
        if out.forces is not None:
            out.forces = torch.where(broken[:, None, None], torch.nan, out.forces)
        return out


def test_propagated_ended_trajectories_keep_their_status_when_the_potential_fails() -> None:
    """With propagate_finished, trajectories that left the box move on into a region where the potential fails:
    they stay where they were, and keep the status LEFT_BOX; running ones that fail end as ELECTRONIC_FAILURE."""
    settings = FSSHSettings(dt=2.0, n_steps=6000, box=16.0, seed=3, propagate_finished=True)
    engine = FSSHEngine(FailingFarAway("tully1"), settings)
    positions, velocities = sample_initial_conditions(20, 30.0, 2000.0, 3)
    positions[:4, 0, 1] = 1.0  # these fail inside the box
    state = engine.initial_state(positions, velocities, torch.zeros(20, dtype=torch.long))
    for _ in range(3000):  # well past the time the fast ones need to leave the box and reach x = 20
        engine.step(state)
    assert state.status[:4].tolist() == [ELECTRONIC_FAILURE] * 4
    transmitted = state.positions[4:, 0, 0] > 0
    assert int(transmitted.sum()) > 5 and bool((state.positions[4:, 0, 0][transmitted] <= 20.0).all())
    assert bool((state.status[4:] == LEFT_BOX).all())


# ---------------------------------------------------------------------------------------------- engine: ids, batches
class KeyedTully(TullyPotential):
    """Tully 1 with each structure's trajectory id written in its y coordinate (the model ignores y): checks that
    every call of the engine passes the right `trajectories`, and counts the calls by kind."""

    def __init__(self) -> None:
        super().__init__("tully1")
        self.calls = {"nacs": 0, "forces only": 0}
        self.mismatches = 0

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None):
        self.calls["nacs" if nacs else "forces only"] += 1
        if trajectories is None or not torch.equal(trajectories.double(), positions[:, 0, 1]):
            self.mismatches += 1
        return super().compute(positions, states=states, all_forces=all_forces, nacs=nacs, trajectories=trajectories)


def test_every_potential_call_names_its_trajectories() -> None:
    potential = KeyedTully()
    settings = FSSHSettings(dt=4.0, n_steps=2500, box=12.0, seed=4, frustrated="reflect_gradv", forced_hop_gap=0.012)
    engine = FSSHEngine(potential, settings)
    n = 80
    positions = torch.zeros((n, 1, 3), dtype=torch.float64)
    positions[:, 0, 0] = -4.0
    positions[:, 0, 1] = torch.arange(n, dtype=torch.float64)
    velocities = torch.zeros_like(positions)
    velocities[:, 0, 0] = torch.linspace(5.0, 30.0, n, dtype=torch.float64) / 2000.0  # slow: frustrated; fast: hop
    state = engine.initial_state(positions, velocities, torch.zeros(n, dtype=torch.long))
    kinds = {"frustrated": 0, "accepted": 0, "forced": 0}
    for _ in range(600):
        hops = engine.step(state)
        assert torch.equal(hops.trajectory.double(), state.positions[hops.trajectory, 0, 1])  # events carry the ids
        kinds["frustrated"] += int(hops.frustrated.sum())
        kinds["accepted"] += int((~hops.frustrated & (hops.kind == 0)).sum())
        kinds["forced"] += int((hops.kind == 1).sum())
    state = state.select(torch.arange(1, n, 2))  # a subset keeps its ids
    for _ in range(600):
        engine.step(state)
    assert all(count > 0 for count in kinds.values()), kinds
    assert potential.calls["forces only"] > 0 and potential.mismatches == 0


def test_a_trajectory_does_not_depend_on_its_batch() -> None:
    """One slow trajectory stepped alone and beside fast ones that cross the coupling region one after another (and
    need many more electronic substeps there): its coefficients are the same bits at every step."""
    settings = FSSHSettings(dt=10.0, n_steps=400, seed=9, decoherence="edc", max_energy_drift=1.0)
    engine = FSSHEngine(TullyPotential("tully1"), settings)
    n = 21
    positions = torch.zeros((n, 1, 3), dtype=torch.float64)
    velocities = torch.zeros_like(positions)
    positions[0, 0, 0], velocities[0, 0, 0] = -1.5, 8.0 / 2000.0  # the probe reaches the crossing slowly
    positions[1:, 0, 0] = -10.0 * torch.arange(n - 1, dtype=torch.float64)  # the others at 0.1 Bohr / a.u.: one
    velocities[1:, 0, 0] = 0.1  # reaches the crossing every 10 steps
    batch = engine.initial_state(positions, velocities, torch.zeros(n, dtype=torch.long),
                                 coefficients=torch.tensor([[0.8, 0.6]] * n, dtype=torch.complex128))
    alone = batch.select(torch.tensor([0]))
    changed, most_substeps = False, torch.zeros(n, dtype=torch.long)
    for _ in range(150):
        T_old, E_old = batch.couplings.clone(), batch.energies.clone()
        engine.step(batch)
        engine.step(alone)
        n_sub = auto_substeps(E_old, batch.energies, T_old, batch.couplings, settings.dt, settings.max_substep_angle)
        most_substeps = torch.maximum(most_substeps, n_sub)
        assert int((batch.status == RUNNING).sum()) == n
        assert torch.equal(alone.coefficients[0], batch.coefficients[0])
        assert torch.equal(alone.positions[0], batch.positions[0]) and torch.equal(alone.active[0], batch.active[0])
        changed = changed or abs(alone.coefficients[0, 1].abs().item() - 0.6) > 1e-2
    assert changed  # the probe's own coupling moves its population: the comparison is not trivial
    assert most_substeps[0] <= 3 and most_substeps[1:15].min() >= 10  # its neighbours needed far more substeps
