"""Checks on what a shot and its mask really are: duplicates against the dataset, colour modes, alignment,
OS junk. The defect kinds in test_validation cover each check on a studio batch; these cover the rules'
edges (a correction is not a duplicate, every colour mode is named, junk alone never fails a delivery)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR, ShotKey
from garmentseg.data.index import BATCHES_DIR, INDEX_FILE, build_index, write_index
from garmentseg.imageio import encode_png
from garmentseg.validation import content, validate_batch
from garmentseg.validation import metadata as md
from garmentseg.validation.defects import clean_pair, near_duplicate_shot, os_junk_files, write_clean_batch
from garmentseg.validation.duplicates import SIGNATURES, dataset_signatures
from garmentseg.validation.suite import build_checks
from tests.data.test_validation import H, W, small_project

LIMITS = md.Limits(
    max_file_bytes=10_000_000, max_pixels=40_000_000, contrast_band_px=8, cutout_rgb_max_diff=8
)


def _findings(result, check: str) -> dict[str, str]:
    return {f["file"]: f["message"] for f in result.findings if f["check"] == check}


def test_same_shot_as_a_dataset_one_is_an_error_but_a_correction_is_not(tmp_path):
    cfg = small_project(tmp_path / "project")
    data_dir = cfg.path(cfg.paths.data_dir)
    old = data_dir / BATCHES_DIR / "b-old"
    keys = write_clean_batch(old, 3, width=W, height=H, seed=3)
    write_index(build_index(data_dir, cfg), data_dir / INDEX_FILE)
    new = tmp_path / "landing" / "b-new"
    fresh = write_clean_batch(new, 2, width=W, height=H, seed=4)
    copied, corrected, re_exported = keys[0], keys[4], keys[8]  # three garments
    near = ShotKey(fresh[1].garment_id, re_exported.view)
    near_duplicate_shot(old, [re_exported, near], out=new)
    # A new garment id whose Front is the dataset's shot of another garment, byte for byte.
    for side in (RAW_DIR, CUTOUT_DIR):
        shutil.copyfile(
            old / side / copied.filename, new / side / ShotKey(fresh[0].garment_id, copied.view).filename
        )
        # The dataset's own garment and view delivered again (a retoucher's correction).
        shutil.copyfile(old / side / corrected.filename, new / side / corrected.filename)
    result = validate_batch(new, cfg)
    duplicates = _findings(result, "duplicate_shot")
    copy = f"{RAW_DIR}/{ShotKey(fresh[0].garment_id, copied.view).filename}"
    assert set(duplicates) == {copy}, result.findings
    assert (
        f"dataset batch b-old: {BATCHES_DIR}/b-old/{RAW_DIR}/{copied.filename} (identical bytes)"
        in duplicates[copy]
    )
    assert not result.passed
    assert set(_findings(result, "near_duplicate_shot")) == {f"{RAW_DIR}/{near.filename}"}
    assert (
        f"dataset batch b-old: {BATCHES_DIR}/b-old/{RAW_DIR}/{re_exported.filename}"
        in _findings(result, "near_duplicate_shot")[f"{RAW_DIR}/{near.filename}"]
    )
    assert (cfg.path(cfg.paths.state_dir) / "cache" / SIGNATURES).is_file()


def test_another_picture_under_a_garment_id_and_view_the_dataset_holds_is_refused(tmp_path):
    """A correction keeps the shot (here re-encoded, as an export writes it); another garment's picture under a
    known id would silently replace the dataset's pair. A source that re-shoots can make it a warning."""
    import cv2

    cfg = small_project(tmp_path / "project")
    data_dir = cfg.path(cfg.paths.data_dir)
    old = data_dir / BATCHES_DIR / "b-old"
    keys = write_clean_batch(old, 2, width=W, height=H, seed=3)
    write_index(build_index(data_dir, cfg), data_dir / INDEX_FILE)
    elsewhere = write_clean_batch(tmp_path / "elsewhere", 1, width=W, height=H, seed=9)
    new = tmp_path / "landing" / "b-new"
    corrected, reused = keys[0], next(k for k in keys[3:] if k.view == elsewhere[0].view)
    for side in (RAW_DIR, CUTOUT_DIR):
        (new / side).mkdir(parents=True)
        shutil.copyfile(tmp_path / "elsewhere" / side / elsewhere[0].filename, new / side / reused.filename)
    shot = cv2.imread(str(old / RAW_DIR / corrected.filename), cv2.IMREAD_UNCHANGED)
    (new / RAW_DIR / corrected.filename).write_bytes(
        cv2.imencode(".png", shot, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1]
    )
    shutil.copyfile(old / CUTOUT_DIR / corrected.filename, new / CUTOUT_DIR / corrected.filename)
    result = validate_batch(new, cfg)
    found = _findings(result, "garment_id_reused")
    assert set(found) == {f"{RAW_DIR}/{reused.filename}"}, result.findings
    assert (
        f"dataset batch b-old: {BATCHES_DIR}/b-old/{RAW_DIR}/{reused.filename}"
        in found[f"{RAW_DIR}/{reused.filename}"]
    )
    assert not result.passed
    assert not [
        f for f in result.findings if f["file"].endswith(corrected.filename) and f["severity"] == "error"
    ]
    lenient = cfg.model_copy(
        update={
            "sources": {
                **cfg.sources,
                "studio": cfg.sources["studio"].model_copy(update={"warn_only": ("garment_id_reused",)}),
            }
        }
    )
    assert validate_batch(new, lenient).passed


def test_dataset_signatures_are_the_same_over_workers_and_an_unreadable_shot_has_none(tmp_path, caplog):
    data_dir = tmp_path / "one" / "data"
    keys = write_clean_batch(data_dir / BATCHES_DIR / "b-old", 3, width=W, height=H, seed=3)
    index = build_index(data_dir, small_project(tmp_path / "index"))
    broken = data_dir / BATCHES_DIR / "b-old" / RAW_DIR / keys[2].filename
    broken.write_bytes(broken.read_bytes()[:200])  # truncated after indexing: a disk fault
    signed = {}
    for workers in (1, 2):
        cfg = small_project(tmp_path / str(workers), workers=workers)
        signed[workers] = dataset_signatures(index, data_dir, cfg).sort_values("raw_sha256")
    assert signed[1].to_dict("records") == signed[2].to_dict("records")
    assert len(signed[2]) == len(keys) - 1 and signed[2]["dhash"].str.len().min() > 0
    assert keys[2].filename in caplog.text and "no near-duplicate signature" in caplog.text


def test_a_re_encoded_copy_is_an_exact_duplicate_by_its_pixels(tmp_path):
    cfg = small_project(tmp_path / "project")
    batch = tmp_path / "b-reencoded"
    keys = write_clean_batch(batch, 2, width=W, height=H, seed=6)
    a, b = (k for k in keys if k.view == "Front")
    import cv2

    for side in (RAW_DIR, CUTOUT_DIR):
        image = cv2.imread(str(batch / side / a.filename), cv2.IMREAD_UNCHANGED)
        _ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # other bytes, same pixels
        (batch / side / b.filename).write_bytes(data.tobytes())
    result = validate_batch(batch, cfg)
    found = _findings(result, "duplicate_shot")
    assert set(found) == {f"{RAW_DIR}/{a.filename}", f"{RAW_DIR}/{b.filename}"}
    assert all("(identical pixels)" in message for message in found.values())


def test_a_clean_delivery_with_os_junk_passes_with_warnings(tmp_path):
    cfg = small_project(tmp_path / "project")
    batch = tmp_path / "b-junk"
    write_clean_batch(batch, 2, width=W, height=H, seed=8)
    expected = os_junk_files(batch, [])
    result = validate_batch(batch, cfg)
    assert result.passed and result.exit_code == 0
    assert {(f["file"], f["check"], f["severity"]) for f in result.findings} == {
        (file, "os_junk", "warning") for file in expected
    }
    assert result.summary["files"] == 12  # the junk is not counted as delivered


def _png_pil(array: np.ndarray, mode: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array, mode=None if mode == "P" else mode).convert(mode).save(out, format="PNG")
    return out.getvalue()


def _jpeg_cmyk(rgb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("side", "make", "mode"),
    [
        (RAW_DIR, lambda rgb, _a: encode_png(rgb[..., 0]), "greyscale 8-bit"),
        (RAW_DIR, lambda rgb, _a: _png_pil(rgb, "P"), "palette 8-bit"),
        (RAW_DIR, lambda rgb, _a: encode_png(rgb.astype(np.uint16) * 257), "RGB 16-bit"),
        (CUTOUT_DIR, lambda rgb, a: _png_pil(np.dstack([rgb[..., 0], a]), "LA"), "greyscale+alpha 8-bit"),
    ],
)
def test_colour_mode_and_bit_depth_are_named(tmp_path, cfg, side, make, mode):
    shot, cutout = clean_pair(np.random.default_rng(1), 96, 144)
    rel = f"{side}/x.png"
    (tmp_path / side).mkdir()
    (tmp_path / rel).write_bytes(make(shot, cutout[..., 3]))
    row, image = md._load(tmp_path, rel, side, LIMITS)
    assert image is None and row["colour_mode"] == mode and row["colour_mode_error"] == mode
    spec = next(s for s in build_checks(cfg, "studio") if s.check == "colour_mode")
    row["side"] = side
    assert mode in spec.message(row) and "8-bit RGB" in spec.message(row)


def test_a_cmyk_jpeg_is_named_in_the_format_finding(tmp_path, cfg):
    shot, _ = clean_pair(np.random.default_rng(1), 96, 144)
    (tmp_path / RAW_DIR).mkdir()
    (tmp_path / RAW_DIR / "x.png").write_bytes(_jpeg_cmyk(shot))
    row, _ = md._load(tmp_path, f"{RAW_DIR}/x.png", RAW_DIR, LIMITS)
    assert row["format"] == "jpeg" and row["colour_mode"] == "CMYK 8-bit" and "colour_mode_error" not in row
    spec = next(s for s in build_checks(cfg, "studio") if s.check == "format")
    assert "content is JPEG (CMYK 8-bit), not PNG" in spec.message(row)


def test_edge_alignment_sees_shifted_and_foreign_masks():
    rng = np.random.default_rng(3)
    pairs = [clean_pair(rng, 288, 432) for _ in range(4)]
    for i, (shot, cutout) in enumerate(pairs):
        bgr, mask = shot[..., ::-1], cutout[..., 3] >= 128
        foreign = pairs[(i + 1) % len(pairs)][1][..., 3] >= 128
        assert content.edge_alignment(bgr, mask, 17) > 0.95
        assert content.edge_alignment(bgr, np.roll(mask, 9, axis=1), 17) < 0.5  # 3 % of the width
        assert content.edge_alignment(bgr, foreign, 17) < 0.75  # params.yaml's floor
        flat = np.full_like(bgr, 128)
        assert content.edge_alignment(flat, mask, 17) is None  # no edge anywhere: contrast's case


def test_inverted_alpha_and_touched_sides():
    _, cutout = clean_pair(np.random.default_rng(2), 96, 144)
    alpha = cutout[..., 3]
    assert content.border_opaque_share(alpha) == 0 and content.touched_sides(alpha) is None
    assert content.border_opaque_share(255 - alpha) > 0.9
    reaching = alpha.copy()
    reaching[60:70, :50] = 255
    reaching[-1, 40] = 255
    assert content.touched_sides(reaching) == "bottom,left"
