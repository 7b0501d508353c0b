"""Shared fixtures: the public reference data in ../shared/data, and the slow-test switch.

Tests marked `slow` are skipped by default and run when CI=true or EXSNN_SLOW=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
CH2NH2_FILES = {
    "spainn": SHARED_DATA / "spainn" / "spainn_ch2nh2+.db",
    "schnarc": SHARED_DATA / "spainn" / "schnarc_ch2nh2+.db",
    "schnarc_base64": SHARED_DATA / "schnarc" / "CH2NH2+_99points.db",
}
SHARC_QM_OUT = SHARED_DATA / "sharc" / "qm_out" / "QM.out"
H2O_DATASET = PROJECT_ROOT / "datasets" / "h2o_cis_sto3g" / "h2o_cis_sto3g.xyz"


def pytest_configure(config: pytest.Config) -> None:
    """With pytest-xdist's workers (the default `-n auto`), one PyTorch thread each: the workers share the cores."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        import torch

        torch.set_num_threads(1)


def run_slow_tests() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("EXSNN_SLOW") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow_tests():
        return
    skip = pytest.mark.skip(reason="slow; runs when CI=true or EXSNN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public reference data not found at {SHARED_DATA} (CI provides ../shared)")
    return SHARED_DATA


@pytest.fixture
def sharc_dir(shared_data: Path, tmp_path: Path) -> Path:
    """A folder holding the shared QM.out (read in place through a link) and a matching 6-atom QM.in."""
    folder = tmp_path / "sharc"
    folder.mkdir()
    (folder / "QM.out").symlink_to(SHARC_QM_OUT)
    (folder / "QM.in").write_text(
        "6\nCH2NH2+ test geometry\n"
        "C  0.000  0.000  0.000\nN  0.000  0.000  1.280\nH  0.000  0.940 -0.540\n"
        "H  0.000 -0.940 -0.540\nH  0.000  0.870  1.850\nH  0.000 -0.870  1.850\n"
        "unit angstrom\n"
    )
    return folder
