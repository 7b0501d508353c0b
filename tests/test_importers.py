"""Importers and exporters on the public CH2NH2+ sets and a real SHARC QM.out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import CH2NH2_FILES, H2O_DATASET

from exsnn.data import FrameArrays
from exsnn.data.exporters import export_extxyz, export_spainn_db
from exsnn.data.importers import detect_format, import_file
from exsnn.data.importers.sharc import read_qm_in
from exsnn.units import ANGSTROM_IN_BOHR

ARRAYS = ("numbers", "positions", "energies", "forces", "nacs", "dipoles")


def load(path: Path, fmt: str | None = None) -> FrameArrays:
    imported = import_file(path, fmt)
    return FrameArrays.from_frames(imported.frames, imported.metadata.n_states)


@pytest.fixture(scope="module")
def ch2nh2(shared_data: Path) -> dict[str, FrameArrays]:
    return {name: load(path) for name, path in CH2NH2_FILES.items()}


def assert_same_arrays(a: FrameArrays, b: FrameArrays) -> None:
    assert a.n_frames == b.n_frames
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for label in a.masks:
        np.testing.assert_array_equal(a.masks[label], b.masks[label], err_msg=label)


def test_three_ch2nh2_encodings_give_the_same_arrays(ch2nh2: dict[str, FrameArrays]) -> None:
    reference = ch2nh2["spainn"]
    assert reference.n_frames == 99 and reference.n_states == 3
    assert all(reference.masks[label].all() for label in ("energies", "forces", "nacs", "dipoles"))
    for name in ("schnarc", "schnarc_base64"):
        assert_same_arrays(reference, ch2nh2[name])


def test_spainn_layout_is_transposed_from_schnarc_row(shared_data: Path) -> None:
    import ase.db

    row = ase.db.connect(str(CH2NH2_FILES["schnarc"])).get(id=5)
    frame = load(CH2NH2_FILES["spainn"]).frame(4)
    np.testing.assert_array_equal(frame.forces, row.data["forces"].transpose(1, 0, 2))
    np.testing.assert_array_equal(frame.nacs[:, 2], row.data["nacs"][2])  # pair 12
    np.testing.assert_array_equal(frame.energies, row.data["energy"])


@pytest.mark.parametrize("suffix, exporter", [(".db", export_spainn_db), (".xyz", export_extxyz)])
def test_export_then_import_is_exact(ch2nh2: dict[str, FrameArrays], tmp_path: Path, suffix: str, exporter) -> None:
    imported = import_file(CH2NH2_FILES["spainn"])
    arrays = ch2nh2["spainn"]
    out = tmp_path / f"round{suffix}"
    exporter(arrays, imported.metadata, out)
    again = import_file(out)
    assert_same_arrays(arrays, FrameArrays.from_frames(again.frames, 3))
    assert (again.metadata.method, again.metadata.basis) == ("MR-CISD(6,4)", "aug-cc-pVDZ")


def test_extxyz_in_angstrom_ev_agrees_to_rounding(ch2nh2: dict[str, FrameArrays], tmp_path: Path) -> None:
    arrays = ch2nh2["spainn"]
    out = tmp_path / "ase.xyz"
    export_extxyz(arrays, import_file(CH2NH2_FILES["spainn"]).metadata, out, units="ase")
    header = out.read_text().splitlines()[1]
    assert "length_unit=Angstrom" in header and "energy_unit=eV" in header
    first_position = float(out.read_text().splitlines()[2].split()[1])
    assert first_position == pytest.approx(arrays.positions[0, 0] / ANGSTROM_IN_BOHR)
    again = load(out)
    for name in ("positions", "energies", "forces", "nacs", "dipoles"):
        np.testing.assert_allclose(getattr(again, name), getattr(arrays, name), rtol=1e-13, atol=1e-13, err_msg=name)


def test_sharc_qm_out_labels(sharc_dir: Path) -> None:
    imported = import_file(sharc_dir)
    assert detect_format(sharc_dir / "QM.out") == "sharc"
    assert len(imported.frames) == 1 and imported.metadata.n_states == 4
    frame = imported.frames[0]
    # numbers below are read off the QM.out text
    np.testing.assert_allclose(frame.energies, [-14.45517347344, -14.17455526634, -14.14113052401, -13.90633447402])
    assert frame.forces is not None and frame.forces.shape == (6, 4, 3)
    assert frame.forces[0, 0, 2] == pytest.approx(9.494185230259e-02)  # state 1, atom 1, z: gradient -9.49e-2
    assert frame.nacs is not None and frame.nacs.shape == (6, 6, 3)
    assert frame.nacs[0, 0, 2] == pytest.approx(6.692000899568e-04)  # pair 01 (s1 1, s2 2), atom 1, z
    assert frame.dipoles is not None and frame.dipoles.shape == (10, 3)
    assert frame.dipoles[0] == pytest.approx([0.0, 0.0, 9.531627424668])  # <S0|mu|S0>
    assert frame.dipoles[1] == pytest.approx([0.0, 0.0, -9.350992232931])  # <S0|mu|S1>
    assert frame.dipoles[5, 1] == pytest.approx(0.4531840917409)  # <S1|mu_y|S2>; pairs 00 01 02 03 11 12
    numbers, positions = read_qm_in(sharc_dir / "QM.in")
    assert list(numbers) == [6, 7, 1, 1, 1, 1]
    np.testing.assert_allclose(frame.positions, positions)
    assert positions[1, 2] == pytest.approx(1.28 * ANGSTROM_IN_BOHR)


def test_shipped_h2o_dataset_imports(tmp_path: Path) -> None:
    imported = import_file(H2O_DATASET)
    assert len(imported.frames) == 24 and imported.metadata.n_states == 3
    assert imported.metadata.program == "PySCF" and imported.metadata.basis == "STO-3G"
    frame = imported.frames[0]
    assert frame.nacs is None and frame.forces is not None
    assert np.all(np.diff(frame.energies) > 0)


def test_exported_smooth_nacs_follow_spainn_definition(ch2nh2: dict[str, FrameArrays], tmp_path: Path) -> None:
    """SPaiNN's own database stores smooth_nacs = (E_i - E_j) d_ij; exporting the imported set reproduces them."""
    import ase.db

    out = tmp_path / "again.db"
    export_spainn_db(ch2nh2["spainn"], import_file(CH2NH2_FILES["spainn"]).metadata, out)
    with ase.db.connect(str(CH2NH2_FILES["spainn"])) as original, ase.db.connect(str(out)) as exported:
        for row_in, row_out in zip(original.select(), exported.select()):
            np.testing.assert_allclose(row_out.data["smooth_nacs"], row_in.data["smooth_nacs"], rtol=1e-10, atol=1e-12)
