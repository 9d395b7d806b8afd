"""Files operating systems leave beside a delivery: not part of it, ignored with a warning, never ingested.

Finder writes .DS_Store and AppleDouble `._<name>` files (and `__MACOSX/` inside zip archives), Windows
Explorer writes Thumbs.db and desktop.ini; a studio copying a batch from a laptop brings them along.
"""

from __future__ import annotations

# Lower-cased exact names -> what wrote them.
_NAMES = {
    ".ds_store": "macOS Finder folder settings",
    "__macosx": "macOS archive resource forks",
    ".appledouble": "macOS resource forks",
    ".spotlight-v100": "macOS Spotlight index",
    ".trashes": "macOS trash",
    ".fseventsd": "macOS file-system event log",
    ".temporaryitems": "macOS temporary items",
    ".localized": "macOS localisation marker",
    "icon\r": "macOS custom folder icon",
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "ehthumbs_vista.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    "$recycle.bin": "Windows recycle bin",
}


def os_junk(name: str) -> str | None:
    """What left this file or folder (e.g. 'macOS Finder folder settings'), or None if it is not OS junk."""
    if name.startswith("._"):
        return "macOS AppleDouble resource fork"
    return _NAMES.get(name.lower())
