"""Adding a batch moved to `garmentseg.data.plane`, the data plane's one module. This name stays only until
the callers outside the data package (validation/ingest.py, validation/cli.py, orchestration/tasks.py)
import from `garmentseg.data.plane`; it is deleted when they do."""

from garmentseg.data.plane import AddBatchResult, DatasetError, add_batch

__all__ = ["AddBatchResult", "DatasetError", "add_batch"]
