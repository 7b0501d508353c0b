"""Potential specs on the command line: registers the upper-layer prefixes (`model:`, `pyscf:`) before loading."""

from __future__ import annotations

from pathlib import Path

from exsnn.potentials.base import Potential


def register_for(spec: str) -> None:
    """Import the module that registers the spec's prefix, if it lives above the potentials layer."""
    if spec.startswith("model:"):
        import exsnn.model.potential  # noqa: F401
    elif spec.startswith("pyscf:"):
        import exsnn.qm.potential  # noqa: F401


def load(spec: str, base_dir: str | Path = ".", device: str = "cpu", numbers: object = None) -> Potential:
    from exsnn.potentials.spec import load_potential

    register_for(spec)
    return load_potential(spec, base_dir, device, numbers=numbers)
