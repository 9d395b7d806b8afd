"""The one way every benchmark hands back its figures: JSON on stdout, and in a file when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(figures: dict[str, Any], path: Path | None) -> None:
    """The figures as JSON in `path` (nothing when None): also what a long run writes as it goes, so the
    figures so far survive a run cut off at its time limit."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")


def emit(figures: dict[str, Any], path: Path | None) -> None:
    print(json.dumps(figures, indent=2))
    save(figures, path)
