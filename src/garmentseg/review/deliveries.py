"""The weekly job's memory of a delivery folder: what it held when it was cut out, so a delivery changed
since (a fixed file re-delivered, an upload completed) is cut out again (orchestration/tasks.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from stat import S_ISREG


def delivery_fingerprint(folder: Path) -> str:
    """The name, size and modification time of every file directly in a delivery (hidden ones aside: a
    file manager's .DS_Store, an upload's temporary file): cheap to take weekly over every delivery ever
    made, and changed by any shot added, removed or replaced. A file that vanishes while it is read (an
    upload renaming its temporary file) is left out, as the listing of shots leaves it out."""
    entries = []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if S_ISREG(stat.st_mode):
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def cut_out_as_it_is(delivery: Path, record_file: Path) -> bool:
    """Whether the delivery's record says it was cut out as the folder is now."""
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    try:
        now = delivery_fingerprint(delivery)
    except OSError:  # unreadable: listed, so the cut-out names why
        return False
    return record.get("fingerprint", now) == now  # a record from before fingerprints counts as done
