"""Importers of foreign excited-state data into exsnn frames; `import_file` picks one by format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from exsnn.data.importers.ase_db import import_ase_db
from exsnn.data.importers.common import ImportedData
from exsnn.data.importers.extxyz import import_extxyz
from exsnn.data.importers.sharc import import_sharc
from exsnn.errors import DataError

IMPORTERS: dict[str, Callable[..., ImportedData]] = {
    "spainn-db": lambda path, **kw: import_ase_db(path, layout="spainn", **kw),
    "schnarc-db": lambda path, **kw: import_ase_db(path, layout="schnarc", **kw),
    "ase-db": lambda path, **kw: import_ase_db(path, layout="auto", **kw),
    "sharc": import_sharc,
    "extxyz": import_extxyz,
}


def detect_format(path: str | Path) -> str:
    """Format name from the file name: .db -> ase-db (layout detected), .xyz/.extxyz -> extxyz,
    QM.out or a directory -> sharc."""
    path = Path(path)
    if path.is_dir() or path.name.lower() == "qm.out" or path.suffix.lower() == ".out":
        return "sharc"
    suffix = path.suffix.lower()
    if suffix == ".db":
        return "ase-db"
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    raise DataError(path, "format", f"cannot tell the format from the name; pass one of {sorted(IMPORTERS)}")


def import_file(path: str | Path, fmt: str | None = None, **options: Any) -> ImportedData:
    """Import any supported source; `fmt` overrides the format detected from the name."""
    fmt = fmt or detect_format(path)
    if fmt not in IMPORTERS:
        raise DataError(path, "format", f"unknown format {fmt!r}; expected one of {sorted(IMPORTERS)}")
    return IMPORTERS[fmt](path, **{k: v for k, v in options.items() if v is not None})


__all__ = ["IMPORTERS", "ImportedData", "detect_format", "import_file"]
