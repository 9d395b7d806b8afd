"""Deliberately broken batches: one defective file per defect kind, for tests and the demo.

`write_clean_batch` draws simple clean pairs fast (a garment-like blob on a studio backdrop with a
mannequin stand); `inject_defects` breaks a clean batch in place, each defect on its own garment/view,
and returns what validation must report: file -> checks.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from garmentseg.config import VIEWS
from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR, ShotKey, parse_shot_name
from garmentseg.imageio import PNG_SIGNATURE, encode_png

BOMB_SIDE = 100_000  # the header claims 100000x100000: 10 gigapixels, 40 GB as RGBA


@dataclass(frozen=True)
class Defect:
    """One injected defect and the findings it must produce: file -> checks."""

    kind: str
    expected: dict[str, tuple[str, ...]]
    severity: str = "error"


# ---------------------------------------------------------------- clean pairs


def clean_pair(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(shot RGB, cutout RGBA) of one garment: backdrop gradient, stand, garment polygon, sensor noise."""
    import cv2

    top, bottom = rng.uniform(222, 238), rng.uniform(205, 222)
    tint = rng.uniform(-4, 4, 3)
    ramp = np.linspace(top, bottom, height, dtype=np.float32)[:, None, None]
    shot = np.broadcast_to(ramp + tint.astype(np.float32), (height, width, 3)).astype(np.uint8).copy()
    cx, s = width / 2 + rng.uniform(-0.04, 0.04) * width, width / 288
    pole = (70, 70, 74)
    cv2.rectangle(shot, (int(cx - 5 * s), int(0.55 * height)), (int(cx + 5 * s), height), pole, -1)
    cv2.ellipse(
        shot, (int(cx), int(0.16 * height)), (int(22 * s), int(30 * s)), 0, 0, 360, (214, 190, 160), -1
    )
    shoulder, hem = rng.uniform(0.20, 0.25) * height, rng.uniform(0.62, 0.80) * height
    half = rng.uniform(0.20, 0.27) * width
    flare = half * rng.uniform(0.95, 1.25)
    sleeve = rng.uniform(0.12, 0.3) * height
    pts = np.array(
        [
            (cx - half * 0.45, shoulder - 8 * s),
            (cx + half * 0.45, shoulder - 8 * s),
            (cx + half, shoulder),
            (cx + half + 0.12 * width, shoulder + sleeve),
            (cx + half * 0.95, shoulder + sleeve + 10 * s),
            (cx + half * 0.92, shoulder + 0.1 * height),
            (cx + flare, hem),
            (cx - flare, hem),
            (cx - half * 0.92, shoulder + 0.1 * height),
            (cx - half * 0.95, shoulder + sleeve + 10 * s),
            (cx - half - 0.12 * width, shoulder + sleeve),
            (cx - half, shoulder),
        ],
        np.int32,
    )
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    colour = _garment_colour(rng, shot[int(hem) - 1, 0].astype(np.float32))
    garment = np.empty_like(shot)
    garment[:] = colour.astype(np.uint8)
    if rng.random() < 0.5:  # stripes: a pattern the contrast measure must not mistake for an edge
        period = max(4, int(rng.uniform(10, 24) * s))
        rows = (np.arange(height) // period) % 2 == 1
        garment[rows] = np.clip(colour * 0.8, 0, 255).astype(np.uint8)
    shot = np.where(mask[..., None] == 1, garment, shot)
    noise = rng.integers(-3, 4, size=shot.shape, dtype=np.int16)
    shot = np.clip(shot.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    alpha = mask * np.uint8(255)
    cutout = np.dstack([shot * mask[..., None], alpha])
    return shot, cutout


def _garment_colour(rng: np.random.Generator, backdrop: np.ndarray) -> np.ndarray:
    while True:
        colour = rng.uniform(20, 235, 3).astype(np.float32)
        if np.linalg.norm(colour - backdrop) > 90 and np.linalg.norm(colour - np.array([70, 70, 74])) > 60:
            return colour


def _write_garment(args: tuple[str, str, int, int, tuple[str, ...], int]) -> None:
    batch, garment, width, height, views, seed = args
    rng = np.random.default_rng(seed)
    for view in views:
        shot, cutout = clean_pair(rng, width, height)
        name = ShotKey(garment, view).filename
        (Path(batch) / RAW_DIR / name).write_bytes(encode_png(shot))
        (Path(batch) / CUTOUT_DIR / name).write_bytes(encode_png(cutout))


def write_clean_batch(
    batch_dir: Path,
    garments: int,
    *,
    width: int,
    height: int,
    views: Sequence[str] = VIEWS,
    seed: int = 0,
    workers: int = 1,
) -> list[ShotKey]:
    """Write `garments` x `views` clean pairs in the data contract; returns their keys."""
    import uuid

    batch_dir = Path(batch_dir)
    for side in (RAW_DIR, CUTOUT_DIR):
        (batch_dir / side).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(garments)]
    jobs = [(str(batch_dir), g, width, height, tuple(views), seed * 100_003 + i) for i, g in enumerate(ids)]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_garment, jobs))
    else:
        for job in jobs:
            _write_garment(job)
    return sorted(ShotKey(g, v) for g in ids for v in views)


# ---------------------------------------------------------------- defects


def _paths(batch: Path, key: ShotKey) -> tuple[Path, Path]:
    return batch / RAW_DIR / key.filename, batch / CUTOUT_DIR / key.filename


def _rel(side: str, key: ShotKey) -> str:
    return f"{side}/{key.filename}"


def _read(path: Path, alpha: bool) -> np.ndarray:
    from garmentseg.imageio import read_image

    return read_image(path, max_pixels=1 << 40, alpha=alpha)


def truncated_png(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    raw, _ = _paths(batch, keys[0])
    data = raw.read_bytes()
    raw.write_bytes(data[: len(data) // 2])
    return {_rel(RAW_DIR, keys[0]): ("decodable",)}


def jpeg_as_png(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    import cv2

    raw, _ = _paths(batch, keys[0])
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(_read(raw, False), cv2.COLOR_RGB2BGR))
    raw.write_bytes(buf.tobytes())
    return {_rel(RAW_DIR, keys[0]): ("format",)}


def not_an_image(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    raw, _ = _paths(batch, keys[0])
    raw.write_bytes(b"<html>404 Not Found</html>\n")
    return {_rel(RAW_DIR, keys[0]): ("format",)}


def wrong_resolution(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """Both files of a pair at 3/4 of the studio size (a consistent pair from the wrong camera setup)."""
    import cv2

    out = {}
    for path, side in zip(_paths(batch, keys[0]), (RAW_DIR, CUTOUT_DIR), strict=True):
        image = _read(path, side == CUTOUT_DIR)
        h, w = image.shape[:2]
        path.write_bytes(
            encode_png(cv2.resize(image, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_NEAREST))
        )
        out[_rel(side, keys[0])] = ("resolution",)
    return out


def pair_size_mismatch(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The cutout cropped by a few rows: not the shot's size (nor the studio's)."""
    _, cut = _paths(batch, keys[0])
    cut.write_bytes(encode_png(_read(cut, True)[:-8]))
    return {_rel(CUTOUT_DIR, keys[0]): ("resolution", "pair_size")}


def cutout_without_alpha(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    _, cut = _paths(batch, keys[0])
    cut.write_bytes(encode_png(_read(cut, True)[..., :3]))
    return {_rel(CUTOUT_DIR, keys[0]): ("alpha_channel",)}


def soft_alpha(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The alpha blurred into a wide soft ramp: a matte, not a mask."""
    import cv2

    _, cut = _paths(batch, keys[0])
    image = _read(cut, True)
    sigma = image.shape[1] / 40
    image[..., 3] = cv2.GaussianBlur(image[..., 3], (0, 0), sigma)
    cut.write_bytes(encode_png(image))
    return {_rel(CUTOUT_DIR, keys[0]): ("alpha_binary",)}


def empty_mask(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    _, cut = _paths(batch, keys[0])
    image = _read(cut, True)
    image[..., 3] = 0
    cut.write_bytes(encode_png(image))
    return {_rel(CUTOUT_DIR, keys[0]): ("mask_area",)}


def full_mask(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The whole shot exported opaque: no garment was cut out."""
    raw, cut = _paths(batch, keys[0])
    shot = _read(raw, False)
    cut.write_bytes(encode_png(np.dstack([shot, np.full(shot.shape[:2], 255, np.uint8)])))
    return {_rel(CUTOUT_DIR, keys[0]): ("mask_area",)}


def opaque_cutout(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The cutout's alpha set opaque everywhere, its RGB left black outside the garment: one finding (the
    mask's area), not also a cutout "of another shot"."""
    _, cut = _paths(batch, keys[0])
    image = _read(cut, True)
    image[..., 3] = 255
    cut.write_bytes(encode_png(image))
    return {_rel(CUTOUT_DIR, keys[0]): ("mask_area",)}


def low_contrast(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The garment recoloured like what surrounds it (shot and cutout stay consistent)."""
    import cv2

    raw, cut = _paths(batch, keys[0])
    shot, cutout = _read(raw, False), _read(cut, True)
    mask = cutout[..., 3] >= 128
    # Normalised blur of the surroundings only: each garment pixel takes the colour of nearby backdrop.
    outside = (~mask).astype(np.float32)
    sigma = shot.shape[1] / 30
    spread = cv2.GaussianBlur(shot.astype(np.float32) * outside[..., None], (0, 0), sigma)
    weight = cv2.GaussianBlur(outside, (0, 0), sigma)[..., None]
    surroundings = spread / np.maximum(weight, 1e-3)
    rng = np.random.default_rng(0)
    noisy = surroundings[mask] + rng.integers(-3, 4, size=(int(mask.sum()), 3))
    garment = np.clip(noisy, 0, 255).astype(np.uint8)
    shot[mask] = garment
    cutout[..., :3][mask] = garment
    raw.write_bytes(encode_png(shot))
    cut.write_bytes(encode_png(cutout))
    return {_rel(RAW_DIR, keys[0]): ("contrast",)}


def orphan_raw(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    _paths(batch, keys[0])[1].unlink()
    return {_rel(RAW_DIR, keys[0]): ("paired",)}


def orphan_cutout(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    _paths(batch, keys[0])[0].unlink()
    return {_rel(CUTOUT_DIR, keys[0]): ("paired",)}


def swapped_cutouts(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """Two garments' cutouts of one view exchanged."""
    (_, a), (_, b) = _paths(batch, keys[0]), _paths(batch, keys[1])
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    return {_rel(CUTOUT_DIR, keys[0]): ("rgb_match",), _rel(CUTOUT_DIR, keys[1]): ("rgb_match",)}


def bad_file_name(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """A stray copy named with a lower-case view."""
    raw, _ = _paths(batch, keys[0])
    name = f"{keys[0].garment_id}_{keys[0].view.lower()}.png"
    shutil.copyfile(raw, raw.parent / name)
    return {f"{RAW_DIR}/{name}": ("file_name",)}


def duplicate_view(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The same garment/view twice: an upper-case-UUID twin of a shot."""
    raw, _ = _paths(batch, keys[0])
    name = f"{keys[0].garment_id.upper()}_{keys[0].view}.png"
    shutil.copyfile(raw, raw.parent / name)
    return {f"{RAW_DIR}/{name}": ("duplicate",)}


def missing_view(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    for path in _paths(batch, keys[0]):
        path.unlink()
    return {_rel(RAW_DIR, keys[0]): ("views",)}


def decompression_bomb(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """A 100-byte PNG whose header claims 100000x100000 pixels."""
    raw, _ = _paths(batch, keys[0])
    raw.write_bytes(bomb_png(BOMB_SIDE, BOMB_SIDE))
    return {_rel(RAW_DIR, keys[0]): ("max_pixels",)}


def zero_byte(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    _, cut = _paths(batch, keys[0])
    cut.write_bytes(b"")
    return {_rel(CUTOUT_DIR, keys[0]): ("file_size",)}


def stray_entry(batch: Path, _keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    (batch / "notes.txt").write_text("retouch done\n")
    return {"notes.txt": ("layout",)}


def _opaque_cutout(shot: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A cutout whose RGB is the whole shot (so it matches the shot wherever the alpha is opaque)."""
    return np.dstack([shot, alpha.astype(np.uint8)])


def inverted_alpha(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The alpha inverted on export: the backdrop opaque, the garment transparent; RGB is the shot's."""
    raw, cut = _paths(batch, keys[0])
    cut.write_bytes(encode_png(_opaque_cutout(_read(raw, False), 255 - _read(cut, True)[..., 3])))
    return {_rel(CUTOUT_DIR, keys[0]): ("alpha_inverted",)}


def garment_cut_by_frame(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """Shot and cutout framed too far left: the garment's sleeve leaves the frame (a studio never does)."""
    raw, cut = _paths(batch, keys[0])
    shot, cutout = _read(raw, False), _read(cut, True)
    dx = int(np.flatnonzero((cutout[..., 3] >= 128).any(axis=0))[0]) + 6
    for image, path in ((shot, raw), (cutout, cut)):
        moved = np.concatenate([image[:, dx:], np.repeat(image[:, -1:], dx, axis=1)], axis=1)
        path.write_bytes(encode_png(moved))
    return {_rel(CUTOUT_DIR, keys[0]): ("mask_border",)}


def shifted_alpha(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The alpha moved 3 % of the width to the right; the cutout's RGB is still the shot's."""
    raw, cut = _paths(batch, keys[0])
    alpha = _read(cut, True)[..., 3]
    moved = np.roll(alpha, round(0.03 * alpha.shape[1]), axis=1)
    cut.write_bytes(encode_png(_opaque_cutout(_read(raw, False), moved)))
    return {_rel(CUTOUT_DIR, keys[0]): ("edge_alignment",)}


def duplicate_shot(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """One garment's shot and cutout delivered again under a second garment id (a copy-paste)."""
    for source, target in zip(_paths(batch, keys[0]), _paths(batch, keys[1]), strict=True):
        shutil.copyfile(source, target)
    return {_rel(RAW_DIR, keys[0]): ("duplicate_shot",), _rel(RAW_DIR, keys[1]): ("duplicate_shot",)}


def near_duplicate_shot(
    batch: Path, keys: list[ShotKey], out: Path | None = None
) -> dict[str, tuple[str, ...]]:
    """One garment's shot re-exported 4 levels brighter under a second garment id, with its cutout (into
    the batch `out` when given: a copy of a shot the dataset already holds)."""
    raw, cut = _paths(batch, keys[0])
    shot = np.clip(_read(raw, False).astype(np.int16) + 4, 0, 255).astype(np.uint8)
    alpha = _read(cut, True)[..., 3]
    copy_raw, copy_cut = _paths(out or batch, keys[1])
    copy_raw.write_bytes(encode_png(shot))
    copy_cut.write_bytes(encode_png(np.dstack([shot * (alpha[..., None] >= 128), alpha])))
    return {
        _rel(RAW_DIR, keys[0]): ("near_duplicate_shot",),
        _rel(RAW_DIR, keys[1]): ("near_duplicate_shot",),
    }


def grayscale_shot(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The shot exported in greyscale (PNG colour type 0); its cutout stays in colour."""
    import cv2

    raw, _ = _paths(batch, keys[0])
    raw.write_bytes(encode_png(cv2.cvtColor(_read(raw, False), cv2.COLOR_RGB2GRAY)))
    return {_rel(RAW_DIR, keys[0]): ("colour_mode",)}


def grey_pixels_in_rgb(batch: Path, keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """The shot desaturated but saved as RGB (R = G = B): the header says colour, the pixels do not."""
    import cv2

    raw, _ = _paths(batch, keys[0])
    grey = cv2.cvtColor(_read(raw, False), cv2.COLOR_RGB2GRAY)
    raw.write_bytes(encode_png(np.dstack([grey, grey, grey])))
    return {_rel(RAW_DIR, keys[0]): ("colour_mode",)}


def os_junk_files(batch: Path, _keys: list[ShotKey]) -> dict[str, tuple[str, ...]]:
    """What macOS and Windows leave beside a copied delivery."""
    junk = (".DS_Store", "__MACOSX/._raw", f"{RAW_DIR}/._shot.png", f"{CUTOUT_DIR}/Thumbs.db", "desktop.ini")
    for rel in junk:
        (batch / rel).parent.mkdir(parents=True, exist_ok=True)
        (batch / rel).write_bytes(b"\0\5\x16\7junk")
    return {rel.split("/")[0] if rel.startswith("__MACOSX") else rel: ("os_junk",) for rel in junk}


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking RGBA PNG header claiming width x height, followed by a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


DefectFn = Callable[[Path, list[ShotKey]], dict[str, tuple[str, ...]]]
# kind -> (function, how many garment/views it consumes, severity of its finding)
DEFECTS: dict[str, tuple[DefectFn, int, str]] = {
    "truncated_png": (truncated_png, 1, "error"),
    "jpeg_as_png": (jpeg_as_png, 1, "error"),
    "not_an_image": (not_an_image, 1, "error"),
    "wrong_resolution": (wrong_resolution, 1, "error"),
    "pair_size_mismatch": (pair_size_mismatch, 1, "error"),
    "cutout_without_alpha": (cutout_without_alpha, 1, "error"),
    "soft_alpha": (soft_alpha, 1, "error"),
    "empty_mask": (empty_mask, 1, "error"),
    "full_mask": (full_mask, 1, "error"),
    "opaque_cutout": (opaque_cutout, 1, "error"),
    "low_contrast": (low_contrast, 1, "error"),
    "orphan_raw": (orphan_raw, 1, "error"),
    "orphan_cutout": (orphan_cutout, 1, "error"),
    "swapped_cutouts": (swapped_cutouts, 2, "error"),
    "bad_file_name": (bad_file_name, 1, "error"),
    "duplicate_view": (duplicate_view, 1, "error"),
    "missing_view": (missing_view, 1, "warning"),
    "decompression_bomb": (decompression_bomb, 1, "error"),
    "zero_byte": (zero_byte, 1, "error"),
    "stray_entry": (stray_entry, 0, "error"),
    "inverted_alpha": (inverted_alpha, 1, "error"),
    "garment_cut_by_frame": (garment_cut_by_frame, 1, "error"),
    "shifted_alpha": (shifted_alpha, 1, "error"),
    "duplicate_shot": (duplicate_shot, 2, "error"),
    "near_duplicate_shot": (near_duplicate_shot, 2, "warning"),
    "grayscale_shot": (grayscale_shot, 1, "error"),
    "grey_pixels_in_rgb": (grey_pixels_in_rgb, 1, "error"),
    "os_junk": (os_junk_files, 0, "warning"),
}


def batch_keys(batch_dir: Path) -> list[ShotKey]:
    """The garment/views that have both a shot and a cutout."""
    batch_dir = Path(batch_dir)
    raws = {parse_shot_name(p.name) for p in (batch_dir / RAW_DIR).glob("*.png")}
    cuts = {parse_shot_name(p.name) for p in (batch_dir / CUTOUT_DIR).glob("*.png")}
    return sorted(raws & cuts)


def inject_defects(batch_dir: Path, kinds: Sequence[str] | None = None) -> list[Defect]:
    """Break a clean batch in place, each defect on its own garment/view; what validation must report."""
    batch_dir = Path(batch_dir)
    free = batch_keys(batch_dir)
    defects = []
    for kind in kinds or list(DEFECTS):
        fn, needed, severity = DEFECTS[kind]
        keys: list[ShotKey] = []
        for key in list(free):
            if len(keys) == needed:
                break
            # Several keys of one defect: same view, different garments (a swap happens within a view).
            if not keys or (key.view == keys[0].view and key.garment_id != keys[0].garment_id):
                keys.append(key)
        if len(keys) < needed:
            raise ValueError(f"{batch_dir}: not enough clean pairs left for defect {kind} ({len(free)} left)")
        for key in keys:
            free.remove(key)
        defects.append(Defect(kind, fn(batch_dir, keys), severity))
    return defects
