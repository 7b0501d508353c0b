"""Analytic potentials checked against finite differences and the published parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy.spatial.transform import Rotation

from exsnn.data import DataError
from exsnn.potentials.lvc import LVCPotential, read_lvc_template
from exsnn.potentials.tully import TULLY_MODELS, TullyPotential

H = 1e-5


def line(x: torch.Tensor) -> torch.Tensor:
    positions = torch.zeros((len(x), 1, 3), dtype=torch.float64)
    positions[:, 0, 0] = x
    return positions


def aligned_vectors(vectors: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Flip eigenvector columns (B, K, N) to overlap positively with the reference."""
    signs = torch.sign((vectors * reference).sum(1, keepdim=True))
    return vectors * signs


@pytest.mark.parametrize("name", sorted(TULLY_MODELS))
def test_tully_forces_and_nacs_match_finite_differences(name: str) -> None:
    potential = TullyPotential(name)
    x = torch.tensor([-3.0, -1.2, -0.3, 0.4, 1.1, 2.5], dtype=torch.float64)
    out = potential.compute(line(x), all_forces=True)
    plus, minus = potential.compute(line(x + H)), potential.compute(line(x - H))
    fd_forces = -(plus.energies - minus.energies) / (2 * H)
    torch.testing.assert_close(out.all_forces[:, :, 0, 0], fd_forces, atol=1e-8, rtol=1e-6)
    # d_01 = <0| d/dx |1> from finite differences of the (sign-aligned) adiabatic vectors
    center = out.state_vectors
    dv = (aligned_vectors(plus.state_vectors, center) - aligned_vectors(minus.state_vectors, center)) / (2 * H)
    fd_nac = (center[:, :, 0] * dv[:, :, 1]).sum(1)
    torch.testing.assert_close(out.nacs[:, 0, 0, 0], fd_nac, atol=1e-7, rtol=1e-5)
    assert torch.count_nonzero(out.all_forces[..., 1:]) == 0 and torch.count_nonzero(out.nacs[..., 1:]) == 0


def test_tully1_published_values() -> None:
    # Tully 1990, model 1: diabatic energies +-A asymptotically, coupling C at x = 0 -> adiabatic gap 2C there
    out = TullyPotential("tully1").compute(line(torch.tensor([-20.0, 0.0, 20.0], dtype=torch.float64)))
    torch.testing.assert_close(out.energies[0], torch.tensor([-0.01, 0.01], dtype=torch.float64))
    torch.testing.assert_close(out.energies[1], torch.tensor([-0.005, 0.005], dtype=torch.float64))
    # NAC at the crossing: d = (dV11/dx) ... = A B / (2 C) in magnitude for this model
    nac = TullyPotential("tully1").compute(line(torch.tensor([0.0], dtype=torch.float64))).nacs[0, 0, 0, 0]
    assert abs(nac.item()) == pytest.approx(0.01 * 1.6 / (2 * 0.005))


@pytest.fixture(scope="module")
def so2(shared_data: Path) -> LVCPotential:
    return LVCPotential(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")


def random_geometries(potential: LVCPotential, n: int, seed: int, rotate: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    reference = potential.reference_positions()
    positions = reference[None] + 0.08 * torch.randn((n, *reference.shape), generator=g, dtype=torch.float64)
    if rotate:
        rotations = torch.tensor(Rotation.random(n, random_state=seed).as_matrix())
        positions = torch.einsum("bij,baj->bai", rotations, positions) + torch.randn((n, 1, 3), generator=g, dtype=torch.float64)
    return positions


def test_lvc_reads_sharc_template(so2: LVCPotential, shared_data: Path) -> None:
    params = read_lvc_template(shared_data / "schnarc" / "lvc_so2_3s" / "LVC.template")
    assert so2.n_states == 3 and so2.n_atoms == 3 and list(so2.numbers) == [16, 8, 8]
    assert params.epsilon[1] == pytest.approx(0.1640045037) and params.kappa[2, 7] == pytest.approx(1.85494e-02)
    assert params.lam[1, 2, 8] == params.lam[2, 1, 8] == pytest.approx(7.32022e-03)
    out = so2.compute(so2.reference_positions()[None])
    torch.testing.assert_close(out.energies[0], torch.as_tensor(params.epsilon), atol=1e-12, rtol=0)


def test_lvc_triplets_are_rejected_clearly(shared_data: Path) -> None:
    template = shared_data / "sharc" / "lvc_so2_4s3t" / "LVC.template"
    with pytest.raises(DataError, match="only singlet LVC models are supported") as info:
        LVCPotential(template)
    assert str(template) in str(info.value)


def test_lvc_forces_match_finite_differences_in_any_orientation(so2: LVCPotential) -> None:
    positions = random_geometries(so2, 4, seed=1)
    out = so2.compute(positions, states=torch.tensor([0, 1, 2, 1]), all_forces=True)
    fd = torch.zeros_like(out.all_forces)
    for a in range(3):
        for c in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[:, a, c] += H
            minus[:, a, c] -= H
            fd[:, :, a, c] = -(so2.compute(plus).energies - so2.compute(minus).energies) / (2 * H)
    torch.testing.assert_close(out.all_forces, fd, atol=2e-9, rtol=1e-6)
    torch.testing.assert_close(out.forces, out.all_forces[torch.arange(4), torch.tensor([0, 1, 2, 1])])


def test_lvc_nacs_match_finite_differences_of_eigenvectors(so2: LVCPotential) -> None:
    positions = random_geometries(so2, 3, seed=2)
    out = so2.compute(positions)

    def vectors(p: torch.Tensor) -> torch.Tensor:
        q, _ = so2.normal_coordinates(p)
        return torch.linalg.eigh(so2.diabatic(q.detach())[0])[1]

    center = vectors(positions)
    fd = torch.zeros_like(out.nacs)
    for a in range(3):
        for c in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[:, a, c] += H
            minus[:, a, c] -= H
            dv = (aligned_vectors(vectors(plus), center) - aligned_vectors(vectors(minus), center)) / (2 * H)
            derivative = torch.einsum("bki,bkj->bij", center, dv)  # <i | d/dR j>
            fd[:, :, a, c] = derivative[:, [0, 0, 1], [1, 2, 2]]
    torch.testing.assert_close(out.nacs, fd, atol=1e-6, rtol=1e-5)
    assert out.nacs.sum(2).abs().max() < 1e-10  # translation invariant


def test_lvc_is_invariant_under_rotation_and_translation(so2: LVCPotential) -> None:
    positions = random_geometries(so2, 1, seed=3, rotate=False)
    rotation = torch.tensor(Rotation.random(random_state=7).as_matrix())
    moved = positions @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a, b = so2.compute(positions, all_forces=True), so2.compute(moved, all_forces=True)
    torch.testing.assert_close(a.energies, b.energies, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.all_forces @ rotation.T, b.all_forces, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.dipoles @ rotation.T, b.dipoles, atol=1e-10, rtol=0)


def test_lvc_template_lines_of_undeclared_multiplicities_are_rejected(shared_data: Path, tmp_path: Path) -> None:
    """SHARC's 4-singlet/3-triplet SO2 model with its states line edited to singlets only: the triplet lines must not
    overwrite the singlet values (S0 came out at 0.124 Hartree instead of 0.000165); the file and line are named."""
    source = shared_data / "sharc" / "lvc_so2_4s3t"
    lines = (source / "LVC.template").read_text().splitlines()
    lines[0] = str(source / "V0.txt")
    lines[1] = "4"
    template = tmp_path / "LVC.template"
    template.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line \d+: epsilon entry for multiplicity 3") as info:
        read_lvc_template(template)
    assert str(template) in str(info.value)


def two_state_so2(shared_data: Path, tmp_path: Path) -> LVCPotential:
    """SO2's coupled S1/S2 pair of the SchNarc model as a 2-state LVC model with transition dipoles, shifted to
    negative energies (LAPACK's 2x2 eigenvector signs then differ from the closed form's, as for a negative trace)."""
    v0 = shared_data / "schnarc" / "lvc_so2_3s" / "V0.txt"
    template = tmp_path / "LVC2.template"
    template.write_text(
        f"{v0}\n2\nepsilon\n2\n 1 1 -0.1700000000\n 1 2 -0.1700000000\nkappa\n4\n 1 1 7 1.19647e-03\n 1 1 8 1.21848e-02\n"
        " 1 2 7 -7.98767e-03\n 1 2 8 1.85494e-02\nlambda\n1\n 1 1 2 9 7.32022e-02\n"
        "DMX R\n 3.93e-06 0.1\n 0.1 1.8e-07\nDMY R\n 6.22e-06 0.43871500\n 0.43871500 -2.6e-07\n"
        "DMZ R\n -0.26910657 0.2\n 0.2 -0.30062189\n"
    )
    return LVCPotential(template)


def test_lvc_two_state_dipoles_and_nacs_share_state_signs(shared_data: Path, tmp_path: Path) -> None:
    """Flipping an adiabatic state's sign flips its NACs and its transition dipoles together, so the outer product
    d_01 (x) mu_01 does not depend on the sign convention. Reference: LAPACK eigenvectors, NACs from their finite
    differences, dipoles from the same vectors (the 2-state model uses closed-form eigenvectors for its NACs)."""
    model = two_state_so2(shared_data, tmp_path)
    positions = random_geometries(model, 16, seed=3)
    out = model.compute(positions, nacs=True)

    def frame(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, rotation = model.normal_coordinates(p)
        return torch.linalg.eigh(model.diabatic(q.detach())[0])[1], rotation.detach()

    center, rotation = frame(positions)
    fd = torch.zeros_like(out.nacs)
    for a in range(3):
        for c in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[:, a, c] += H
            minus[:, a, c] -= H
            dv = (aligned_vectors(frame(plus)[0], center) - aligned_vectors(frame(minus)[0], center)) / (2 * H)
            fd[:, 0, a, c] = torch.einsum("bk,bk->b", center[:, :, 0], dv[:, :, 1])
    dipole = torch.einsum("bk,ckl,bl->bc", center[:, :, 0], model._dipoles, center[:, :, 1])
    dipole = torch.einsum("bc,bcd->bd", dipole, rotation)  # back to the input frame, as the model does
    reference = torch.einsum("bax,bc->baxc", fd[:, 0], dipole)
    predicted = torch.einsum("bax,bc->baxc", out.nacs[:, 0], out.dipoles[:, 1])
    torch.testing.assert_close(predicted, reference, atol=1e-6, rtol=1e-5)
