"""Batch validation: per-image metadata, a Great Expectations suite, steward reports, ingest or quarantine.

The names below load on first use, so a validation worker process importing one submodule stays lean.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IngestOutcome": "garmentseg.validation.ingest",
    "ingest_batch": "garmentseg.validation.ingest",
    "quarantine_batch": "garmentseg.validation.ingest",
    "compare_batches": "garmentseg.validation.report",
    "ValidationResult": "garmentseg.validation.validate",
    "validate_batch": "garmentseg.validation.validate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
