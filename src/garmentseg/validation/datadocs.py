"""Data Docs a steward can read without a network.

GX's pages load Bootstrap, jQuery, bootstrap-table and Font Awesome from public CDNs; offline the index
table (built by bootstrap-table) stays empty and every page is unstyled. After each build, the copies
shipped under static/vendor/ (see its README for versions and licences) go into the site and every page
points at them by a relative path, so the site also works when copied elsewhere or opened from disk.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

VENDOR = Path(__file__).with_name("static") / "vendor"
SITE_STATIC = "static"  # GX's own assets folder in the site; the vendored files go to static/vendor/
# CDN address in GX 1.x's templates -> the vendored file; None: not needed offline, the tag is removed.
CDN_FILES: dict[str, str | None] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js-1.12.9/popper.min.js"
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1/css/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1/js/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": (
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": (
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker-1.9.0/css/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker-1.9.0/js/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/all.min.css"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": None,
    "https://cdn.jsdelivr.net/npm/vega@5": None,
    "https://cdn.jsdelivr.net/npm/vega-lite@5": None,
    "https://cdn.jsdelivr.net/npm/vega-embed@6": None,
}
# A <script src=...></script> or <link href=...> tag loading from the network.
_REMOTE_TAG = re.compile(
    r'<script\b[^>]*\bsrc="(?P<src>https?://[^"]+)"[^>]*>\s*</script>|<link\b[^>]*\bhref="(?P<href>https?://[^"]+)"[^>]*>'
)
# GX's logo, fetched from S3 with the data context's id in the query (a tracking pixel); the site has a copy.
_GX_LOGO = re.compile(r'src="https://great-expectations-web-assets\.s3\.[^"/]+/logo-long\.png[^"]*"')
# Subresource-integrity attributes: a file:// page cannot make the CORS request they require.
_SRI = re.compile(r'\s+(?:integrity|crossorigin)="[^"]*"')


def make_self_contained(docs_dir: Path) -> list[Path]:
    """Copy the vendored assets into the site and point every page at them; the pages rewritten."""
    docs_dir = Path(docs_dir)
    shutil.copytree(VENDOR, docs_dir / SITE_STATIC / "vendor", dirs_exist_ok=True)
    changed = []
    for page in sorted(docs_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        prefix = Path(os.path.relpath(docs_dir / SITE_STATIC, page.parent)).as_posix()
        local = localize(text, prefix, page)
        if local != text:
            page.write_text(local, encoding="utf-8")
            changed.append(page)
    log.info("%s: %d Data Docs pages point at the vendored assets", docs_dir, len(changed))
    return changed


def localize(html: str, prefix: str, page: Path) -> str:
    """The page with each CDN tag pointing at `prefix`/vendor/<file> (`prefix`: the site's static folder
    seen from the page), or removed when not needed; GX's logo from the site's own copy."""

    def replace(match: re.Match[str]) -> str:
        url = match["src"] or match["href"]
        if url not in CDN_FILES:  # a newer GX naming another asset: the page still works online
            log.warning("%s: loads %s from the network; no vendored file stands for it", page, url)
            return match[0]
        target = CDN_FILES[url]
        if target is None:
            return ""
        return _SRI.sub("", match[0]).replace(url, f"{prefix}/vendor/{target}")

    return _GX_LOGO.sub(f'src="{prefix}/images/logo-long.png"', _REMOTE_TAG.sub(replace, html))
