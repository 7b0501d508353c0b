"""Every malformed input gets a DataError naming the file and the field, and the CLI exits non-zero
without touching data already written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ase.db
import numpy as np
import pytest
from ase import Atoms
from conftest import CH2NH2_FILES, H2O_DATASET

from exsnn.data import DataError, count_frames
from exsnn.data.importers import import_file

SPAINN_META = {"n_singlets": 3, "n_triplets": 0, "_distance_unit": "Bohr",
               "_property_unit_dict": {"energy": "Hartree", "forces": "Hartree/Bohr", "nacs": "1"}}


def write_spainn_db(path: Path, rows: list[dict], numbers=(6, 7, 1, 1, 1, 1), metadata=SPAINN_META) -> Path:
    rng = np.random.default_rng(0)
    with ase.db.connect(str(path), type="db") as db:
        for data in rows:
            db.write(Atoms(numbers=list(numbers), positions=rng.normal(size=(len(numbers), 3)) * 2), data=data)
    db = ase.db.connect(str(path), type="db")
    db.metadata = metadata
    return path


def good_row(n_atoms: int = 6) -> dict:
    return {"energy": np.array([[-1.0, -0.8, -0.7]]), "forces": np.zeros((n_atoms, 3, 3)), "nacs": np.zeros((n_atoms, 3, 3))}


def expect_error(path: Path, *fragments: str, fmt: str | None = None) -> DataError:
    with pytest.raises(DataError) as info:
        import_file(path, fmt)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_truncated_database(shared_data: Path, tmp_path: Path) -> None:
    source = CH2NH2_FILES["spainn"].read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(source[: len(source) // 3])
    expect_error(truncated, "unreadable ASE database")


def test_not_a_database(tmp_path: Path) -> None:
    fake = tmp_path / "fake.db"
    fake.write_text("this is not sqlite\n")
    expect_error(fake, "not an SQLite/ASE database")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nothing.db", "does not exist")


def test_wrong_shape(tmp_path: Path) -> None:
    row = good_row()
    row["forces"] = np.zeros((6, 2, 3))
    path = write_spainn_db(tmp_path / "shape.db", [good_row(), row])
    expect_error(path, "row 2: forces", "expected shape (6, 3, 3), got (6, 2, 3)")


def test_nan_label(tmp_path: Path) -> None:
    row = good_row()
    row["nacs"][3, 1, 2] = np.nan
    path = write_spainn_db(tmp_path / "nan.db", [row])
    expect_error(path, "row 1: nacs", "NaN")


def test_unknown_element_in_database(tmp_path: Path) -> None:
    path = write_spainn_db(tmp_path / "element.db", [good_row(2)], numbers=(6, 0))
    expect_error(path, "row 1: numbers", "unknown element")


def test_unknown_element_in_extxyz(tmp_path: Path) -> None:
    path = tmp_path / "element.xyz"
    text = H2O_DATASET.read_text().splitlines()
    text[2] = "Xq" + text[2][2:]
    path.write_text("\n".join(text) + "\n")
    expect_error(path, "species", "unknown element", "Xq")


def test_missing_energy_label(tmp_path: Path) -> None:
    row = good_row()
    del row["energy"]
    path = write_spainn_db(tmp_path / "noenergy.db", [row])
    expect_error(path, "row 1: energy", "missing")


def test_wrong_units_in_metadata(tmp_path: Path) -> None:
    meta = dict(SPAINN_META, _property_unit_dict={"energy": "Hartree", "forces": "Hartree", "nacs": "1"})
    path = write_spainn_db(tmp_path / "units.db", [good_row()], metadata=meta)
    expect_error(path, "units", "not a unit of force")


def test_wrong_units_in_extxyz(tmp_path: Path) -> None:
    path = tmp_path / "units.xyz"
    path.write_text(H2O_DATASET.read_text().replace("energy_unit=Hartree", "energy_unit=Bohr", 1))
    expect_error(path, "frame 0: units", "not a unit of energy")


def test_triplets_are_refused_clearly(tmp_path: Path) -> None:
    path = write_spainn_db(tmp_path / "triplets.db", [good_row()], metadata=dict(SPAINN_META, n_triplets=1))
    expect_error(path, "n_triplets", "singlet-only")


def _sharc_copy(sharc_dir: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "edited"
    folder.mkdir()
    shutil.copy(sharc_dir / "QM.in", folder / "QM.in")
    (folder / "QM.out").write_text(edit((sharc_dir / "QM.out").read_text()))
    return folder / "QM.out"


def test_qm_out_missing_hamiltonian_block(sharc_dir: Path, tmp_path: Path) -> None:
    def drop_hamiltonian(text: str) -> str:
        start = text.index("! 1 Hamiltonian")
        return text[:start] + text[text.index("! 2 Dipole") :]

    path = _sharc_copy(sharc_dir, tmp_path, drop_hamiltonian)
    expect_error(path, "! 1 Hamiltonian Matrix", "missing")


def test_qm_out_truncated_in_gradients(sharc_dir: Path, tmp_path: Path) -> None:
    path = _sharc_copy(sharc_dir, tmp_path, lambda text: text[: text.index("! 3 Gradient") + 300])
    expect_error(path, "! 3 Gradient Vectors", "ends early")


def test_qm_in_atom_count_mismatch(sharc_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mismatch"
    folder.mkdir()
    (folder / "QM.out").symlink_to(sharc_dir / "QM.out")
    (folder / "QM.in").write_text("3\nSO2\nS 0 0 0\nO 0 1.2 0.9\nO 0 -1.2 0.9\nunit angstrom\n")
    expect_error(folder / "QM.out", "natom", "QM.in has 3")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True)


def test_cli_exits_nonzero_and_keeps_existing_data(tmp_path: Path) -> None:
    dataset = tmp_path / "keep.h5"
    assert run_cli("data", "import", H2O_DATASET, dataset).returncode == 0
    before = dataset.read_bytes()
    row = good_row()
    row["energy"][0, 1] = np.inf
    bad = write_spainn_db(tmp_path / "bad.db", [row])
    result = run_cli("data", "import", bad, dataset, "--append")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "energies" in result.stderr and "NaN or infinite" in result.stderr
    assert dataset.read_bytes() == before and count_frames(dataset) == 24
    refused = run_cli("data", "import", H2O_DATASET, dataset)  # no --append/--overwrite
    assert refused.returncode == 2 and "already exists" in refused.stderr
    missing = run_cli("data", "info", tmp_path / "absent.h5")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_qm_out_matrix_header_with_one_number(sharc_dir: Path, tmp_path: Path) -> None:
    path = _sharc_copy(sharc_dir, tmp_path, lambda text: text.replace("(4x4, complex)\n4 4\n", "(4x4, complex)\n4\n", 1))
    expect_error(path, "! 1 Hamiltonian Matrix", "expected a '4 4' matrix header, got '4'")


def test_append_of_another_molecule_or_method_needs_allow_mixed(shared_data: Path, tmp_path: Path) -> None:
    import json

    from exsnn.data import read_frames

    dataset = tmp_path / "h2o.h5"
    assert run_cli("data", "import", H2O_DATASET, dataset).returncode == 0
    before = dataset.read_bytes()
    refused = run_cli("data", "import", CH2NH2_FILES["spainn"], dataset, "--append")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert str(dataset) in refused.stderr and "method" in refused.stderr and "--allow-mixed" in refused.stderr
    assert dataset.read_bytes() == before
    mixed = run_cli("data", "import", CH2NH2_FILES["spainn"], dataset, "--append", "--allow-mixed")
    assert mixed.returncode == 0, mixed.stderr
    arrays = read_frames(dataset)
    assert arrays.n_frames == 24 + 99
    record = json.loads(arrays.provenance[-1])
    from exsnn.data import read_metadata

    assert record["source_metadata"]["method"] == import_file(CH2NH2_FILES["spainn"]).metadata.method != read_metadata(dataset).method
    assert "source_metadata" not in json.loads(arrays.provenance[0])


def test_filter_with_an_unknown_problem_kind_lists_the_kinds(tmp_path: Path) -> None:
    dataset = tmp_path / "h2o.h5"
    assert run_cli("data", "import", H2O_DATASET, dataset).returncode == 0
    result = run_cli("data", "filter", dataset, tmp_path / "clean.h5", "--drop", "short_distance,too_hot")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--drop" in result.stderr and "too_hot" in result.stderr and "nac_translation" in result.stderr
    assert not (tmp_path / "clean.h5").exists()


WATER = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"


@pytest.mark.parametrize("geometry, options, fragments", [
    (WATER, ["--method", "tda-b3lypx/sto-3g"], ["--method", "b3lypx"]),
    (WATER, ["--method", "tda-hf/sto-3gx"], ["--method", "basis", "sto-3gx"]),
    (WATER, ["--method", "tda-hf/sto-3g", "--charge", "1"], ["--charge", "odd"]),
    (WATER, ["--method", "tda-hf/sto-3g", "--states", "1"], ["--states", "at least 2"]),
    (WATER, ["--method", "casscf(8,9)/sto-3g"], ["--method", "active space"]),
    (WATER.replace("H 0.96 0 0", "H nan 0 0"), ["--method", "tda-hf/sto-3g"], ["frame 0", "NaN"]),
    (WATER.replace("H 0.96 0 0", "H 0.1 0 0"), ["--method", "tda-hf/sto-3g"], ["atoms 0 (O) and 1 (H)", "Bohr apart"]),
])
def test_label_refuses_impossible_settings_before_writing(tmp_path: Path, geometry: str, options: list[str],
                                                          fragments: list[str]) -> None:
    source = tmp_path / "water.xyz"
    source.write_text(geometry)
    output = tmp_path / "out.h5"
    result = run_cli("label", source, "-o", output, *options, "--executor", "serial", "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert not output.exists() and list(tmp_path.iterdir()) == [source]


def test_unknown_potential_lists_every_registered_prefix(tmp_path: Path) -> None:
    source = tmp_path / "water.xyz"
    source.write_text(WATER)
    result = run_cli("point", "--potential", "nonsense:x", source)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for prefix in ("tully1", "lvc:", "model:", "pyscf:"):
        assert prefix in result.stderr, result.stderr
    assert "pyscf:" in run_cli("point", "--help").stdout


def test_label_resume_refuses_other_settings_and_retries_failed(tmp_path: Path) -> None:
    import json

    from exsnn.data import read_frames

    source = tmp_path / "water.xyz"
    source.write_text(WATER + WATER.replace("H 0.96 0 0", "H 0.97 0 0"))
    output = tmp_path / "out.h5"
    common = ("--executor", "serial", "--no-progress")
    assert run_cli("label", source, "-o", output, "--method", "tda-hf/sto-3g", *common).returncode == 0
    before = output.read_bytes()
    other = run_cli("label", source, "-o", output, "--method", "tda-hf/6-31g", "--states", "4", *common)
    assert other.returncode == 2 and "basis" in other.stderr and "n_states" in other.stderr and "Traceback" not in other.stderr
    assert output.read_bytes() == before
    again = run_cli("label", source, "-o", output, "--method", "tda-hf/sto-3g", *common, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == 2
    # a header-only file (a run killed before its first commit) takes the new run's settings
    empty = tmp_path / "empty.h5"
    from exsnn.data import DatasetMetadata, create_dataset

    create_dataset(empty, DatasetMetadata(n_states=2, extra={"settings": {"basis": "cc-pvdz"}}))
    assert run_cli("label", source, "-o", empty, "--method", "tda-hf/sto-3g", *common).returncode == 0
    assert read_frames(empty).n_frames == 2
    # --retry-failed labels a failed geometry again (the failed frame stays, marked)
    failed = tmp_path / "failed.h5"
    create_dataset(failed, DatasetMetadata(n_states=3))
    from exsnn.data import Frame, append_frames

    append_frames(failed, [Frame(numbers=np.array([8, 1, 1]), positions=np.zeros((3, 3)) + np.arange(3)[:, None] * 2,
                                 provenance={"input_file": str(source.resolve()), "input_index": 0, "failure": "test"})])
    result = run_cli("label", source, "-o", failed, "--method", "tda-hf/sto-3g", *common, "--json")
    assert json.loads(result.stdout)["skipped"] == 1  # without --retry-failed the failed geometry counts as done
    result = run_cli("label", source, "-o", failed, "--method", "tda-hf/sto-3g", *common, "--json", "--retry-failed")
    assert json.loads(result.stdout)["labelled"] == 1
    assert sum(1 for p in read_frames(failed).provenance if not json.loads(p).get("failure")) == 2
