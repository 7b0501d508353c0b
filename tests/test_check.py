"""The data check finds each kind of suspicious frame, and only those."""

from __future__ import annotations

import numpy as np

from exsnn.data import Frame, FrameArrays
from exsnn.data.check import CheckSettings, check_frames
from exsnn.units import ANGSTROM_IN_BOHR

WATER = np.array([[0.0, 0.0, 0.2217], [0.0, 1.4309, -0.8867], [0.0, -1.4309, -0.8867]])


def water(**labels) -> Frame:
    return Frame(numbers=np.array([8, 1, 1]), positions=WATER.copy(), energies=np.array([-75.0, -74.6, -74.5]), **labels)


def kinds(frames: list[Frame]) -> list[tuple[int, str]]:
    return [(p.frame, p.kind) for p in check_frames(FrameArrays.from_frames(frames, 3))]


def translation_free_nacs(rng: np.random.Generator) -> np.ndarray:
    nacs = rng.normal(size=(3, 3, 3))
    return nacs - nacs.mean(axis=0, keepdims=True)


def test_clean_frames_have_no_problems() -> None:
    rng = np.random.default_rng(1)
    assert kinds([water(), water(nacs=translation_free_nacs(rng))]) == []


def test_geometry_converted_twice_is_flagged() -> None:
    shrunk = water()
    shrunk.positions = WATER / ANGSTROM_IN_BOHR**2  # a unit conversion applied twice: bonds shrink 3.6-fold
    assert kinds([water(), shrunk]) == [(1, "short_distance")]


def test_nac_without_translation_factors_is_flagged() -> None:
    rng = np.random.default_rng(2)
    nacs = translation_free_nacs(rng)
    nacs[:, 1] += 0.5 * np.linalg.norm(nacs[:, 1]) / np.sqrt(3) * np.array([1.0, 0.0, 0.0])  # pair 02 shifted
    problems = check_frames(FrameArrays.from_frames([water(nacs=nacs)], 3))
    assert [(p.kind, "02:" in p.reason, "01:" in p.reason) for p in problems] == [("nac_translation", True, False)]
    assert check_frames(FrameArrays.from_frames([water(nacs=nacs)], 3), CheckSettings(nac_translation_ratio=2.0)) == []


def test_unordered_energies_and_non_finite_values_are_flagged() -> None:
    swapped = water()
    swapped.energies = np.array([-75.0, -74.5, -74.6])
    arrays = FrameArrays.from_frames([water(), swapped, water(forces=np.zeros((3, 3, 3)))], 3)
    arrays.forces[7, 1, 0] = np.nan  # a label written by some other tool with a NaN inside
    found = [(p.frame, p.kind) for p in check_frames(arrays)]
    assert found == [(1, "energy_order"), (2, "non_finite")]


def test_ch2nh2_short_distances_are_exactly_rows_1_to_10(shared_data) -> None:
    from conftest import CH2NH2_FILES

    from exsnn.data.importers import import_file

    imported = import_file(CH2NH2_FILES["spainn"])
    problems = check_frames(FrameArrays.from_frames(imported.frames, 3))
    short = sorted({p.frame for p in problems if p.kind == "short_distance"})
    assert [imported.frames[k].provenance["row_id"] for k in short] == list(range(1, 11))
    assert any(p.kind == "nac_translation" for p in problems)  # computed without electron-translation factors


def test_implausible_forces_and_couplings_are_flagged_and_left_out_of_campaign_training(tmp_path) -> None:
    """A force or a coupling numerator (E_j - E_i) d_ij above 3 Hartree/Bohr is a failed calculation (flagged, and a
    campaign does not train on it); a large NAC at a small gap is not."""
    from exsnn.active.train import campaign_split
    from exsnn.data import DatasetMetadata, append_frames
    from exsnn.data.check import implausible_labels

    rng = np.random.default_rng(3)
    nacs = translation_free_nacs(rng) * 0.1
    near = water(nacs=nacs.copy(), forces=np.zeros((3, 3, 3)))
    near.energies = np.array([-75.0, -74.6, -74.5999])  # pair 12 within 0.1 mHartree: a NAC of 500 1/Bohr is fine
    near.nacs[:, 2] = [[0.0, 0.0, 500.0], [0.0, 0.0, -250.0], [0.0, 0.0, -250.0]]
    big_force = water(nacs=nacs.copy(), forces=np.zeros((3, 3, 3)))
    big_force.forces[1, 2] = [0.0, 9.0, 0.0]  # 9 Hartree/Bohr on atom 1 in S2
    big_coupling = water(nacs=nacs.copy(), forces=np.zeros((3, 3, 3)))
    big_coupling.nacs[:, 0] = [[0.0, 0.0, 20.0], [0.0, 0.0, -10.0], [0.0, 0.0, -10.0]]  # x 0.4 Hartree gap = 8
    frames = [water(nacs=nacs.copy(), forces=np.zeros((3, 3, 3))), near, big_force, big_coupling]
    problems = check_frames(FrameArrays.from_frames(frames, 3))
    assert [(p.frame, p.kind) for p in problems if p.kind == "implausible_label"] == [(2, "implausible_label"),
                                                                                     (3, "implausible_label")]
    assert "atom 1 in S2" in implausible_labels(big_force.forces, big_force.energies, big_force.nacs)
    assert "pair 01" in implausible_labels(None, big_coupling.energies, big_coupling.nacs)
    path = tmp_path / "data.h5"
    copies = [Frame(numbers=f.numbers, positions=f.positions, energies=f.energies, forces=f.forces, nacs=f.nacs,
                    provenance={"campaign": {"iteration": 0, "index": k, "split": "train"}})
              for k, f in enumerate(frames * 3)]
    append_frames(path, copies, DatasetMetadata(n_states=3))
    split = campaign_split(path, seed=0)
    used = sorted(np.concatenate(list(split.values())).tolist())
    assert used == [0, 1, 4, 5, 8, 9]
