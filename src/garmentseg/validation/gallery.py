"""gallery.html: one self-contained page per batch showing the failing pairs (shot, mask, green overlay)."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR
from garmentseg.imageio import ImageError, decode, read_header

log = logging.getLogger(__name__)

THUMB_HEIGHT = 180
_GREEN = np.array([0, 200, 70], np.float32)

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} .meta{color:#555;margin-bottom:16px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}
.counts td,.counts th,.findings td,.findings th{padding:3px 10px;text-align:left;border-bottom:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:14px;margin:16px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;width:390px}
.card h3{font-size:13px;margin:0 0 6px;word-break:break-all}
.thumbs{display:flex;gap:6px} .thumbs figure{margin:0;text-align:center;font-size:11px;color:#666}
.thumbs img,.ph{height:180px;width:120px;object-fit:contain;background:#eee;border:1px solid #ccc}
.ph{display:flex;align-items:center;justify-content:center;font-size:11px;color:#900;padding:4px;box-sizing:border-box}
.card ul{margin:6px 0 0;padding-left:18px;font-size:12px} .warning{color:#8a6d00} .error{color:#b71c1c}
"""


def write_gallery(
    batch_dir: Path,
    frame: pd.DataFrame,
    findings: list[dict[str, str]],
    out_path: Path,
    *,
    title: str,
    passed: bool,
    max_pixels: int,
    max_file_bytes: int,
    limit: int,
    data_docs_page: Path | None,
) -> Path:
    """Write the gallery; failing pairs first (most errors first), at most `limit` with thumbnails."""
    rows = frame.set_index("file", drop=False)
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for f in findings:
        if f["severity"] == "error":
            groups.setdefault(_group_key(rows, f["file"]), []).append(f)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    cards = [_card(batch_dir, rows, key, items, max_pixels, max_file_bytes) for key, items in ordered[:limit]]
    counts: dict[str, list[int]] = {}
    for f in findings:
        counts.setdefault(f["check"], [0, 0])[f["severity"] != "error"] += 1
    docs = (
        f'<a href="{html.escape(data_docs_page.resolve().as_uri())}">Data Docs validation page</a>'
        if data_docs_page
        else "no Data Docs page"
    )
    badge = '<span class="badge pass">PASSED</span>' if passed else '<span class="badge fail">FAILED</span>'
    count_rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{e}</td><td>{w}</td></tr>" for c, (e, w) in sorted(counts.items())
    )
    finding_rows = "".join(
        f'<tr class="{f["severity"]}"><td>{html.escape(f["file"])}</td><td>{html.escape(f["check"])}</td>'
        f"<td>{f['severity']}</td><td>{html.escape(f['message'])}</td></tr>"
        for f in findings
    )
    more = (
        f"<p>{len(ordered) - limit} more failing items are listed below only.</p>"
        if len(ordered) > limit
        else ""
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)} {badge}</h1>
<div class="meta">{int(frame["present"].fillna(True).sum())} files, {len(findings)} findings &middot; {docs} &middot; findings.json beside this page</div>
<table class="counts"><tr><th>check</th><th>errors</th><th>warnings</th></tr>{count_rows}</table>
<h2>Failing pairs</h2><div class="grid">{"".join(cards) or "<p>None.</p>"}</div>{more}
<h2>All findings</h2><table class="findings"><tr><th>file</th><th>check</th><th>severity</th><th>message</th></tr>
{finding_rows}</table></body></html>
"""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page)
    return out_path


def _group_key(rows: pd.DataFrame, file: str) -> tuple[str, ...]:
    """A pair's files share a card; a twin, stray or batch-level finding gets its own."""
    if file not in rows.index:
        return (file,)
    row = rows.loc[file]
    if pd.isna(row["garment_id"]) or not pd.isna(row["duplicate_of"]) or not pd.isna(row["name_error"]):
        return (file,)
    return (str(row["garment_id"]), str(row["view"]))


def _card(
    batch_dir: Path,
    rows: pd.DataFrame,
    key: tuple[str, ...],
    items: list[dict[str, str]],
    max_pixels: int,
    max_file_bytes: int,
) -> str:
    if len(key) == 2:
        name = f"{key[0]}_{key[1]}.png"
        raw, cutout = f"{RAW_DIR}/{name}", f"{CUTOUT_DIR}/{name}"
        title = name
    else:
        file = key[0]
        raw, cutout = (file, None) if not file.startswith(CUTOUT_DIR + "/") else (None, file)
        title = file
    shot = _load(batch_dir, rows, raw, max_pixels, max_file_bytes, alpha=False)
    cut = _load(batch_dir, rows, cutout, max_pixels, max_file_bytes, alpha=True)
    if isinstance(shot[0], str) and not isinstance(cut[0], str) and cut[0].shape[2] == 4:
        shot = (cut[0][..., :3], "shot (from cutout)")
    mask = _mask(cut)
    overlay = _overlay(shot[0], mask[0])
    figures = "".join(_figure(img, label) for img, label in (shot, mask, overlay))
    notes = "".join(
        f'<li class="{f["severity"]}"><b>{html.escape(f["check"])}</b> ({html.escape(f["file"])}): '
        f"{html.escape(f['message'])}</li>"
        for f in items
    )
    return f'<div class="card"><h3>{html.escape(title)}</h3><div class="thumbs">{figures}</div><ul>{notes}</ul></div>'


Thumb = tuple[Any, str]  # (RGB/RGBA array, label) or (reason, label)


def _load(
    batch_dir: Path, rows: pd.DataFrame, rel: str | None, max_pixels: int, max_file_bytes: int, *, alpha: bool
) -> Thumb:
    label = "shot" if not alpha else "cutout"
    if rel is None or rel not in rows.index or not bool(rows.loc[rel, "present"]):
        return ("missing", label)
    path = batch_dir / rel
    try:
        if not path.is_file() or path.stat().st_size > max_file_bytes:
            return ("not shown: missing or over the size limit", label)
        # Decoding goes through the same header check as validation: a bomb is refused, not rendered.
        data = path.read_bytes()
        # An RGB cutout decoded with alpha=True would show as fully opaque: show it has no alpha instead.
        keep_alpha = alpha and read_header(data).has_alpha
        return (_thumb(decode(data, max_pixels=max_pixels, alpha=keep_alpha)), label)
    except (ImageError, OSError) as exc:
        return (f"not decodable: {exc}", label)


def _thumb(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = THUMB_HEIGHT / h
    return cv2.resize(image, (max(1, round(w * scale)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)


def _mask(cut: Thumb) -> Thumb:
    image, _ = cut
    if isinstance(image, str):
        return (image, "mask")
    if image.shape[2] != 4:
        return ("no alpha channel", "mask")
    return (np.repeat(image[..., 3:4], 3, axis=2), "mask (alpha)")


def _overlay(shot: Any, mask: Any) -> Thumb:
    import cv2

    if isinstance(shot, str) or isinstance(mask, str):
        return ("no overlay", "overlay")
    if mask.shape[:2] != shot.shape[:2]:
        mask = cv2.resize(mask, (shot.shape[1], shot.shape[0]), interpolation=cv2.INTER_NEAREST)
    weight = (mask[..., :1].astype(np.float32) / 255.0) * 0.55
    blended = shot[..., :3].astype(np.float32) * (1 - weight) + _GREEN * weight
    return (blended.astype(np.uint8), "overlay")


def _figure(image: Any, label: str) -> str:
    if isinstance(image, str):
        return f'<figure><div class="ph">{html.escape(image)}</div><figcaption>{label}</figcaption></figure>'
    return f'<figure><img src="data:image/jpeg;base64,{_jpeg_b64(image)}"><figcaption>{label}</figcaption></figure>'


def _jpeg_b64(rgb: np.ndarray) -> str:
    import cv2

    # imageio only writes PNG; a thumbnail is a JPEG, so the RGB->BGR swap for cv2 happens here.
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    if not ok:
        raise ImageError("encode", "JPEG thumbnail encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")
