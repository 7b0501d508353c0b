"""What every importer returns, and small parsing helpers shared by importers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from exsnn.data.frame import Frame
from exsnn.data.store import DatasetMetadata


@dataclass
class ImportedData:
    """Frames read from a foreign file (validated, atomic units) and the metadata for the exsnn dataset."""

    metadata: DatasetMetadata
    frames: list[Frame]


def parse_reference_method(text: str) -> tuple[str, str, str]:
    """Split 'MR-CISD(6,4)/aug-cc-pVDZ, program: COLUMBUS' into (method, basis, program); missing parts are ''."""
    program = ""
    match = re.search(r",?\s*program\s*:\s*(.+)$", text, flags=re.IGNORECASE)
    if match:
        program = match.group(1).strip()
        text = text[: match.start()]
    method, _, basis = text.strip().partition("/")
    return method.strip(), basis.strip(), program
