"""The surface-hopping engine: conservation laws, determinism, hop mechanics, decoherence, exact scattering."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from exsnn.data.phases import pair_signs, state_signs_from_nacs
from exsnn.dynamics.decoherence import energy_based_decoherence
from exsnn.dynamics.fssh import LEFT_BOX, FSSHEngine, kinetic_energy
from exsnn.dynamics.hopping import attempt_hops
from exsnn.dynamics.initial_conditions import wigner_harmonic
from exsnn.dynamics.scattering import run_scattering, sample_initial_conditions
from exsnn.dynamics.settings import FSSHSettings
from exsnn.dynamics.sign_tracking import track_signs
from exsnn.dynamics.state import EnsembleState
from exsnn.potentials.base import Potential, PotentialOutput
from exsnn.potentials.lvc import LVCPotential
from exsnn.potentials.tully import TULLY_MODELS, TullyPotential
from exsnn.validation.wavepacket import exact_scattering


def tully_ensemble(
    model: str = "tully1", n: int = 200, k: float = 14.0, seed: int = 5, n_steps: int = 8000, **options
) -> tuple[FSSHEngine, object]:
    potential = TullyPotential(model)
    settings = FSSHSettings(dt=2.0, n_steps=n_steps, box=16.0, seed=seed, **options)
    engine = FSSHEngine(potential, settings)
    positions, velocities = sample_initial_conditions(n, k, 2000.0, seed)
    return engine, engine.initial_state(positions, velocities, torch.zeros(n, dtype=torch.long))


def test_norm_and_total_energy_are_conserved_through_hops() -> None:
    engine, state = tully_ensemble(decoherence="none")
    hops = []
    worst_norm = 0.0

    def observe(s, events) -> None:
        nonlocal worst_norm
        worst_norm = max(worst_norm, float(((s.coefficients.abs() ** 2).sum(1) - 1).abs().max()))
        hops.append(int((~events.frustrated).sum()))

    engine.run(state, observe)
    assert sum(hops) > 20, "the test needs trajectories that hop"
    assert worst_norm < 1e-12
    drift = (engine.total_energy(state) - state.total_energy0).abs().max()
    assert drift < 2e-6
    assert bool((state.status == LEFT_BOX).all())


def test_same_seed_same_trajectories_other_seed_differs() -> None:
    finals = []
    for seed in (5, 5, 6):
        engine, state = tully_ensemble(seed=seed, n=100, n_steps=2500)
        engine.run(state)
        finals.append((state.positions.clone(), state.active.clone()))
    assert torch.equal(finals[0][0], finals[1][0]) and torch.equal(finals[0][1], finals[1][1])
    assert not torch.equal(finals[0][1], finals[2][1])


def hop_fixture(frustrated: str, kinetic: float, rescale: str = "nac", target_force: float | None = None) -> tuple[FSSHEngine, dict]:
    """One Tully-1 trajectory on state 0 drawn to hop to state 1 (0.01 Hartree up), NAC along +x, moving along +x with
    `kinetic` Hartree; the grad-V check sees the target force `target_force` along x."""
    engine = FSSHEngine(TullyPotential("tully1"), FSSHSettings(dt=1.0, n_steps=1, frustrated=frustrated, decoherence="none"))
    v = torch.zeros((1, 1, 3), dtype=torch.float64)
    v[0, 0, 0] = math.sqrt(2 * kinetic / 2000.0)
    d = torch.zeros((1, 1, 1, 3), dtype=torch.float64)
    d[0, 0, 0, 0] = 1.0
    energies = torch.tensor([[-0.005, 0.005]], dtype=torch.float64)
    force = torch.tensor([[[0.001, 0.0, 0.0]]], dtype=torch.float64)

    def target_forces(rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        forces = torch.zeros((len(rows), 1, 3), dtype=torch.float64)
        forces[:, 0, 0] = math.nan if target_force is None else target_force
        return forces

    return engine, dict(velocities=v, active=torch.tensor([0]), target=torch.tensor([1]), energies=energies, nacs=d,
                        forces=force, masses=engine.masses, pair_index=engine.pairs.pair_index, rescale=rescale,
                        frustrated_mode=frustrated, target_forces=target_forces)


def test_allowed_hop_conserves_energy_along_the_nac() -> None:
    engine, args = hop_fixture("keep", kinetic=0.03)
    outcome = attempt_hops(**args)
    v = outcome.velocities
    assert outcome.active.tolist() == [1] and not outcome.frustrated.item() and outcome.attempted.item()
    before = kinetic_energy(args["velocities"], engine.masses) + args["energies"][0, 0]
    after = kinetic_energy(v, engine.masses) + args["energies"][0, 1]
    assert after.item() == pytest.approx(before.item(), abs=1e-15)


@pytest.mark.parametrize("mode, reversed_", [("keep", False), ("reflect", True)])
def test_frustrated_hop_keeps_or_reflects(mode: str, reversed_: bool) -> None:
    engine, args = hop_fixture(mode, kinetic=0.004)  # less than the 0.01 gap
    outcome = attempt_hops(**args)
    assert outcome.active.tolist() == [0] and outcome.frustrated.item()
    v0 = args["velocities"][0, 0, 0].item()
    assert outcome.velocities[0, 0, 0].item() == pytest.approx(-v0 if reversed_ else v0)


def test_edc_damps_inactive_states_with_the_granucci_persico_rate() -> None:
    c = torch.tensor([[math.sqrt(0.6), math.sqrt(0.4)]], dtype=torch.complex128)
    energies = torch.tensor([[0.0, 0.05]], dtype=torch.float64)
    kinetic = torch.tensor([0.02], dtype=torch.float64)
    damped = energy_based_decoherence(c, torch.tensor([0]), energies, kinetic, dt=10.0, constant=0.1)
    tau = (1 + 0.1 / 0.02) / 0.05
    assert (damped[0, 1].abs() ** 2).item() == pytest.approx(0.4 * math.exp(-2 * 10.0 / tau))
    assert (damped.abs() ** 2).sum().item() == pytest.approx(1.0)


def test_nac_based_sign_tracking_undoes_random_state_flips() -> None:
    g = torch.Generator().manual_seed(0)
    previous = torch.randn((50, 6, 4, 3), generator=g, dtype=torch.float64)  # 4 states, 6 pairs
    true_signs = torch.where(torch.rand((50, 4), generator=g) < 0.5, -1.0, 1.0).double()
    true_signs[:, 0] = 1
    flipped = (previous + 0.01 * torch.randn(previous.shape, generator=g, dtype=torch.float64)) * pair_signs(
        true_signs, 4
    )[:, :, None, None]
    found = state_signs_from_nacs(flipped, previous, 4)
    assert torch.equal(found, true_signs)


@pytest.fixture(scope="module")
def so2(shared_data: Path) -> LVCPotential:
    return LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")


def test_lvc_nve_on_one_state_conserves_energy_over_a_picosecond(so2: LVCPotential) -> None:
    fs = 41.341373335
    settings = FSSHSettings(dt=0.5 * fs, n_steps=2000, decoherence="none", seed=1)
    engine = FSSHEngine(so2, settings)
    g = torch.Generator().manual_seed(3)
    positions = so2.reference_positions()[None].repeat(8, 1, 1) + 0.05 * torch.randn(
        (8, 3, 3), generator=g, dtype=torch.float64
    )
    state = engine.initial_state(positions, torch.zeros_like(positions), torch.zeros(8, dtype=torch.long))
    hops, totals = [], []

    def observe(s, events) -> None:
        hops.append(len(events.trajectory))
        totals.append(engine.total_energy(s))

    engine.run(state, observe)
    assert sum(hops) == 0  # S0 is far below S1: a single-state NVE run
    totals_t = torch.stack(totals)  # (steps, B)
    deviation = (totals_t - state.total_energy0).abs().max().item()
    drift = (totals_t[-200:].mean(0) - totals_t[:200].mean(0)).abs().max().item()
    assert deviation < 3e-5, deviation  # velocity-Verlet fluctuation, bounded
    assert drift < 1e-6, drift  # the bar is "well below 1e-4 Hartree over 1 ps at 0.5 fs"


class _RandomStateSigns(Potential):
    """A potential's output without state vectors and with random state signs at every call, as a network gives it."""

    def __init__(self, inner: Potential) -> None:
        self.inner, self.n_states, self.numbers, self.masses = inner, inner.n_states, inner.numbers, inner.masses
        self.calls = 0

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None) -> PotentialOutput:
        out = self.inner.compute(positions, states, all_forces, nacs, trajectories)
        out.state_vectors = None
        if out.nacs is not None:
            self.calls += 1
            g = torch.Generator().manual_seed(self.calls)
            signs = torch.where(torch.rand(len(positions), self.n_states, generator=g) < 0.5, -1.0, 1.0).double()
            out.nacs = out.nacs * pair_signs(signs, self.n_states)[:, :, None, None]
        return out


def _so2_populations(potential: Potential, n: int = 300, **options) -> torch.Tensor:
    """Populations (T, N) of 20 fs of FSSH from S2 on SO2 LVC from 0 K Wigner samples (fixed seeds)."""
    fs = 41.341373335
    engine = FSSHEngine(potential, FSSHSettings(dt=0.5 * fs, n_steps=40, seed=3, **options))
    lvc = potential.inner if isinstance(potential, _RandomStateSigns) else potential
    positions, velocities = wigner_harmonic(*lvc.harmonic_modes(), n, seed=11)
    state = engine.initial_state(positions, velocities, torch.full((n,), 2))
    active = [state.active.clone()]
    engine.run(state, lambda s, _: active.append(s.active.clone()))
    return torch.nn.functional.one_hot(torch.stack(active), 3).double().mean(1)


def test_sign_tracking_by_nacs_bisects_steps_near_the_seam_to_follow_the_exact_states(so2: LVCPotential) -> None:
    """Without state vectors the states' signs come from the NACs' overlaps between steps; near the S1/S2 seam the
    NAC turns by more than 90 degrees within a 0.5 fs step and a direct alignment picks wrong signs. Bisecting the
    unsure steps recovers the populations tracked by the exact eigenvectors, at a few calls per step."""
    exact = _so2_populations(so2)
    direct = _so2_populations(_RandomStateSigns(so2), sign_bisections=0)
    tracked = _RandomStateSigns(so2)
    bisected = _so2_populations(tracked)
    assert (direct - exact).abs().max() > 0.03
    assert (bisected - exact).abs().max() < 0.01
    assert 40 < tracked.calls <= 41 * (1 + FSSHSettings(dt=1.0, n_steps=1).sign_bisections)


def test_sign_bisection_keeps_the_direct_alignment_where_the_midpoint_fails() -> None:
    """A midpoint where the potential fails (NaN) costs nothing but the refinement: the direct choice stands."""

    class Failing(Potential):
        n_states, numbers, masses = 2, torch.tensor([1]), torch.tensor([1.0], dtype=torch.float64)

        def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None) -> PotentialOutput:
            nan = torch.full((len(positions), 2), torch.nan, dtype=torch.float64)
            return PotentialOutput(nan, torch.full((len(positions), 1, 3), torch.nan, dtype=torch.float64), None,
                                   torch.full((len(positions), 1, 1, 3), torch.nan, dtype=torch.float64))

    start, end = torch.zeros((1, 1, 3), dtype=torch.float64), torch.ones((1, 1, 3), dtype=torch.float64)
    d_start = torch.tensor([[[[1.0, 0.0, 0.0]]]], dtype=torch.float64)
    d_end = torch.tensor([[[[-0.2, 1.0, 0.0]]]], dtype=torch.float64)  # turned by 101 degrees: unsure
    velocities = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=torch.float64)
    signs = track_signs(Failing(), start, d_start, end, d_end, torch.tensor([0]), torch.tensor([0]), velocities, 1.0, 4, 0.97)
    assert signs.tolist() == state_signs_from_nacs(d_end, d_start, 2).tolist() == [[1.0, -1.0]]


# Cases where FSSH is known to be accurate (Tully 1990, Figs. 4-6): all transmission channels at high momentum.
EXACT_CASES = [("tully1", 10.0), ("tully1", 20.0), ("tully1", 30.0), ("tully2", 30.0), ("tully3", 30.0)]


@pytest.mark.slow
@pytest.mark.parametrize("model, momentum", EXACT_CASES)
def test_fssh_matches_exact_quantum_scattering(model: str, momentum: float) -> None:
    exact = exact_scattering(TULLY_MODELS[model], momentum).as_dict()
    result = run_scattering(model, momentum, n_trajectories=2000, seed=11)
    assert result.n_failed == 0
    for key, value in exact.items():
        sigma = result.errors[key]
        assert abs(result.probabilities[key] - value) < 3 * sigma + 0.02, (key, result.probabilities[key], value)


def test_velocity_rescaling_conserves_energy_along_the_velocity() -> None:
    engine, args = hop_fixture("keep", kinetic=0.03, rescale="velocity")
    outcome = attempt_hops(**args)
    v = outcome.velocities
    assert outcome.active.tolist() == [1] and not outcome.frustrated.item()
    assert kinetic_energy(v, engine.masses).item() == pytest.approx(0.03 - 0.01, abs=1e-15)
    assert v[0, 0, 0].item() > 0  # scaled, not reversed


@pytest.mark.parametrize("target_force, reflected", [(-0.002, True), (0.002, False)])
def test_grad_v_criterion_decides_reflection(target_force: float, reflected: bool) -> None:
    """Jasper-Truhlar: reflect a frustrated hop only if the target force opposes the motion along u and the
    forces of the two states along u have opposite signs. Here u = +x, v > 0, F_active = +0.001."""
    engine, args = hop_fixture("reflect_gradv", kinetic=0.004, target_force=target_force)
    outcome = attempt_hops(**args)
    assert outcome.frustrated.item() and outcome.active.tolist() == [0] and not outcome.failed.item()
    assert (outcome.velocities[0, 0, 0].item() < 0) == reflected


def test_forced_hop_to_ground_below_the_gap() -> None:
    engine = FSSHEngine(
        TullyPotential("tully1"), FSSHSettings(dt=1.0, n_steps=1, forced_hop_gap=0.02, decoherence="none")
    )
    positions = torch.zeros((2, 1, 3), dtype=torch.float64)
    positions[:, 0, 0] = torch.tensor([0.0, -30.0])  # gap 0.01 at the crossing, 0.02 far away
    velocities = torch.zeros_like(positions)
    velocities[:, 0, 0] = 0.005
    state = engine.initial_state(positions, velocities, torch.tensor([1, 1]))
    before = engine.total_energy(state).clone()
    events = engine.step(state)
    assert state.active.tolist() == [0, 1]
    assert events.kind.tolist() == [1] and events.trajectory.tolist() == [0] and events.source.tolist() == [1]
    assert (state.coefficients[0].abs() ** 2).tolist() == pytest.approx([1.0, 0.0])
    assert engine.total_energy(state)[0].item() == pytest.approx(before[0].item(), abs=1e-7)


def test_trajectories_end_after_the_set_time_in_the_ground_state_and_only_then() -> None:
    """SHARC's killafter: a trajectory ends (RELAXED) once it has stayed `ground_state_end` in S0; a stint in S0 that
    ends with a hop back up does not count. Up to its end every trajectory is the one of a run without the setting."""
    from exsnn.dynamics.fssh import RELAXED

    def run(ground_state_end: float | None, restart_at: int | None = None) -> tuple[EnsembleState, np.ndarray]:
        engine = FSSHEngine(TullyPotential("tully1"), FSSHSettings(dt=2.0, n_steps=3000, box=12.0, seed=5,
                                                                    ground_state_end=ground_state_end))
        positions, velocities = sample_initial_conditions(100, 10.0, 2000.0, 5)
        state = engine.initial_state(positions, velocities, torch.ones(100, dtype=torch.long))  # upper state
        history = [state.active.clone()]
        if restart_at is not None:  # continue from a copy of what a checkpoint stores, as a resumed run does
            while state.step < restart_at:
                engine.step(state)
                history.append(state.active.clone())
            state = EnsembleState(step=state.step, **{k: v.clone() for k, v in state.tensors().items()})
        engine.run(state, lambda s, _: history.append(s.active.clone()))
        return state, torch.stack(history).numpy()

    k = 80  # steps of 2 a.u.: the stints in S0 of this ensemble that end with a hop back up last 53-104 steps
    free, reference = run(None)
    ended, history = run(k * 2.0)
    back_up_in_time = 0
    for b in range(100):
        a = reference[:, b]
        run_length = np.zeros(len(a), dtype=int)  # steps in S0 since the last arrival there
        for t in range(1, len(a)):
            run_length[t] = run_length[t - 1] + 1 if a[t] == 0 else 0
        reached = np.flatnonzero(run_length >= k)
        stints_up = np.flatnonzero((a[1:] != 0) & (a[:-1] == 0))  # hops back up
        if len(reached):
            t_end = int(reached[0])
            assert int(ended.status[b]) == RELAXED and int(ended.active[b]) == 0
            assert np.array_equal(history[: t_end + 1, b], a[: t_end + 1])  # the same trajectory up to its end
        else:
            assert int(ended.status[b]) == int(free.status[b]) != RELAXED
            assert np.array_equal(history[:, b], a)
        back_up_in_time += int(len(stints_up) > 0 and (not len(reached) or stints_up[0] < reached[0]))
    assert int((ended.status == RELAXED).sum()) >= 20
    resumed, resumed_history = run(k * 2.0, restart_at=1500)  # mid-stint for some: their count must carry over
    assert torch.equal(resumed.status, ended.status) and np.array_equal(resumed_history, history)
    assert back_up_in_time >= 3  # trajectories whose S0 stint ended before k steps: the count was reset for them


def test_energy_drift_beyond_the_limit_marks_the_trajectory_failed() -> None:
    from exsnn.dynamics.fssh import FAILED, RUNNING

    settings = FSSHSettings(dt=400.0, n_steps=50, max_energy_drift=1e-4, decoherence="none")  # absurd time step
    engine = FSSHEngine(TullyPotential("tully1"), settings)
    positions = torch.zeros((2, 1, 3), dtype=torch.float64)
    velocities = torch.zeros_like(positions)
    velocities[0, 0, 0] = 0.02
    velocities[1, 0, 0] = 1e-6
    state = engine.initial_state(positions, velocities, torch.tensor([0, 0]))
    while state.step < 50 and bool((state.status == RUNNING).any()):
        engine.step(state)
    assert state.status[0].item() == FAILED
    frozen = state.positions[0].clone()
    engine.step(state)
    assert torch.equal(state.positions[0], frozen)  # a failed trajectory is not propagated further


class FailingRegionTully(TullyPotential):
    """Tully 1 whose 'electronic structure' fails (NaN, as the PySCF potential reports a failed calculation) for
    structures with x > 0 and y > 0.5: the engine must end exactly those trajectories and keep the others going."""

    def compute(self, positions, states=None, all_forces=False, nacs=True, trajectories=None):
        out = super().compute(positions, states=states, all_forces=all_forces, nacs=nacs, trajectories=trajectories)
        broken = (positions[:, 0, 0] > 0) & (positions[:, 0, 1] > 0.5)
        out.energies = torch.where(broken[:, None], torch.nan, out.energies)
        if out.forces is not None:
            out.forces = torch.where(broken[:, None, None], torch.nan, out.forces)
        return out


def test_a_failed_electronic_structure_ends_only_that_trajectory() -> None:
    from exsnn.dynamics.fssh import ELECTRONIC_FAILURE

    engine = FSSHEngine(FailingRegionTully("tully1"), FSSHSettings(dt=2.0, n_steps=4000, box=16.0, seed=3))
    positions, velocities = sample_initial_conditions(40, 20.0, 2000.0, 3)
    positions[::2, 0, 1] = 1.0  # every other trajectory runs into the failing region (the model ignores y)
    state = engine.initial_state(positions, velocities, torch.zeros(40, dtype=torch.long))
    engine.run(state)
    failed = state.status == ELECTRONIC_FAILURE
    assert failed.tolist() == [k % 2 == 0 for k in range(40)]
    assert bool((state.status[~failed] == LEFT_BOX).all())
    assert bool((state.positions[failed, 0, 0] <= 0).all())  # they stay at their last good step
    assert bool(torch.isfinite(state.energies).all() and torch.isfinite(state.forces).all())
    assert (engine.total_energy(state) - state.total_energy0).abs().max() < 1e-5
    norms = (state.coefficients.abs() ** 2).sum(1)
    assert (norms - 1).abs().max() < 1e-12
