"""The data layer: frames, the HDF5 store, importers/exporters, the data check, torch datasets."""

from exsnn.data.frame import Frame, FrameArrays
from exsnn.data.store import (
    DatasetMetadata,
    DatasetWriter,
    append_frames,
    count_frames,
    create_dataset,
    read_frames,
    read_metadata,
)
from exsnn.errors import DataError

__all__ = [
    "DataError",
    "DatasetMetadata",
    "DatasetWriter",
    "Frame",
    "FrameArrays",
    "append_frames",
    "count_frames",
    "create_dataset",
    "read_frames",
    "read_metadata",
]
