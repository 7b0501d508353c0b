"""`exsnn train` refuses what would fail later, before it writes anything (exit 2, the file or option named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import H2O_DATASET

from exsnn.data import DatasetMetadata, Frame, append_frames


def exsnn(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exsnn.cli.main", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def h2o(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h2o") / "h2o.h5"
    assert exsnn("data", "import", H2O_DATASET, path).returncode == 0
    return path


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_zero_width_names_the_option(h2o: Path, tmp_path: Path) -> None:
    assert_refused(exsnn("train", h2o, "-o", tmp_path / "out", "--width", 0), "--width", "positive integer")
    assert not (tmp_path / "out").exists()


def test_dataset_without_energies(tmp_path: Path) -> None:
    data = tmp_path / "geometries.h5"
    rng = np.random.default_rng(0)
    frames = [Frame(numbers=np.array([8, 1, 1]), positions=rng.normal(size=(3, 3)) + [[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0]])
              for _ in range(10)]
    append_frames(data, frames, DatasetMetadata(n_states=3))
    assert_refused(exsnn("train", data, "-o", tmp_path / "out"), str(data), "energies", "no frame has energies")
    assert not (tmp_path / "out").exists()


def test_too_few_frames_for_the_split(h2o: Path, tmp_path: Path) -> None:
    from exsnn.data import read_frames

    small = tmp_path / "small.h5"
    arrays = read_frames(h2o)
    append_frames(small, arrays.select([0, 1, 2, 3]), DatasetMetadata(n_states=arrays.n_states))
    assert_refused(exsnn("train", small, "-o", tmp_path / "out"), str(small), "split", "at least one frame")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, fragments", [
    ("text", ("split", "cannot read it as an .npz split")),
    ({"train": [0, 1, 2]}, ("train_idx", "holds train")),
    ({"train_idx": [0, 1, 2], "val_idx": [3], "test_idx": [999]}, ("test_idx", "999", "24 frames")),
    ({"train_idx": [0.0, 1.0], "val_idx": [3], "test_idx": [4]}, ("train_idx", "frame indices (integers)")),
])
def test_a_malformed_split_file_in_the_output_folder(h2o: Path, tmp_path: Path, content: object,
                                                     fragments: tuple[str, ...]) -> None:
    """A split the caller placed in the output folder (as a campaign does) is checked before training writes anything."""
    out = tmp_path / "out"
    out.mkdir()
    split = out / "split.npz"
    if isinstance(content, dict):
        with split.open("wb") as handle:
            np.savez(handle, **{key: np.array(value) for key, value in content.items()})
    else:
        split.write_text("not an archive")
    before = split.read_bytes()
    assert_refused(exsnn("train", h2o, "-o", out, "--epochs", 1, "--no-progress"), str(split), *fragments)
    assert sorted(p.name for p in out.iterdir()) == ["split.npz"] and split.read_bytes() == before


def test_checkpoint_of_another_architecture(h2o: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ("--epochs", 1, "--interactions", 1, "--threads", 1, "--no-progress", "--split", 0.6, 0.2, 0.2)
    first = exsnn("train", h2o, "-o", out, "--width", 8, *common)
    assert first.returncode == 0, first.stderr
    assert "exsnn: warning: " + str(h2o) + ": no frame has nacs" in first.stderr  # the shipped set has no NACs
    before = (out / "checkpoints" / "last.ckpt").read_bytes()
    assert_refused(exsnn("train", h2o, "-o", out, "--width", 16, *common), str(out), "last.ckpt", "n_atom_basis",
                   "--restart")
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == before


def test_resume_continues_from_the_last_epoch_not_the_best(h2o: Path, tmp_path: Path) -> None:
    """A run whose best validation loss came early (a learning rate far too large makes it jump around) must resume
    after its last completed epoch: last.ckpt is written every epoch, not only with a new best."""
    import csv

    import torch

    out = tmp_path / "out"
    common = ("--width", 8, "--interactions", 1, "--threads", 1, "--no-progress", "--split", 0.6, 0.2, 0.2, "--lr", 0.5)
    assert exsnn("train", h2o, "-o", out, "--epochs", 8, *common).returncode == 0
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False)["epoch"]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 7
    assert best < 7  # the situation of the defect: the best epoch is not the last one
    assert exsnn("train", h2o, "-o", out, "--epochs", 10, *common).returncode == 0
    epochs = []
    for part in sorted((out / "logs").glob("metrics*.csv")):
        with open(part) as handle:
            epochs += [int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val_loss")]
    assert sorted(epochs) == list(range(10))  # epochs 8 and 9 added, nothing retrained
