"""Per-file metadata: listing rules, the read gates, the contrast measure, drift and the check table."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pandas as pd
import pytest

from garmentseg.config import ConfigError, load_config
from garmentseg.imageio import encode_png
from garmentseg.validation import compare_batches, content
from garmentseg.validation import metadata as md
from garmentseg.validation.defects import bomb_png, clean_pair, write_clean_batch
from garmentseg.validation.suite import build_checks

ROOT = Path(__file__).resolve().parents[2]
GID = "3f2c1a9e-1b2c-4d5e-8f90-123456789abc"
LIMITS = md.Limits(
    max_file_bytes=10_000_000, max_pixels=40_000_000, contrast_band_px=8, cutout_rgb_max_diff=8
)


@pytest.fixture
def cfg():
    return load_config(
        "demo", ROOT / "params.yaml", overrides={"sources": {"studio": {"width": 96, "height": 144}}}
    )


def touch(batch: Path, rel: str, data: bytes = b"x") -> None:
    (batch / rel).parent.mkdir(parents=True, exist_ok=True)
    (batch / rel).write_bytes(data)


def listed(batch: Path, cfg, source: str = "studio") -> pd.DataFrame:
    return md.to_frame(md.plan_batch(batch, source, cfg.sources[source]).rows).set_index("file")


def test_listing_flags_names_twins_orphans_and_missing_views(tmp_path, cfg):
    for rel in (
        f"raw/{GID}_Front.png",
        f"cutouts/{GID}_Front.png",
        f"raw/{GID.upper()}_Front.png",
        f"raw/{GID}_Back.png",
        f"cutouts/{GID}_front.png",
        "raw/IMG_0001.png",
    ):
        touch(tmp_path, rel)
    touch(tmp_path, "garments.csv", b"garment_id,garment_type,difficulty\n")
    touch(tmp_path, "notes.txt")
    for junk in (
        "Thumbs.db",
        ".DS_Store",
        "__MACOSX/x",
        "raw/._x.png",
        "cutouts/desktop.ini",
        "raw/.DS_Store",
    ):
        touch(tmp_path, junk)
    rows = listed(tmp_path, cfg)
    assert rows.loc[f"raw/{GID.upper()}_Front.png", "duplicate_of"].startswith(f"raw/{GID}_Front.png")
    assert pd.isna(rows.loc[f"raw/{GID}_Front.png", "duplicate_of"])  # the canonical spelling is the original
    assert "cutouts/" in rows.loc[f"raw/{GID}_Back.png", "partner_missing"]
    assert "view 'front'" in rows.loc[f"cutouts/{GID}_front.png", "name_error"]
    assert "not a UUID" in rows.loc["raw/IMG_0001.png", "name_error"]
    assert "top level" in rows.loc["notes.txt", "layout_error"] and "garments.csv" not in rows.index
    junk = rows[rows["os_junk"].notna()]
    assert set(junk.index) == {
        "Thumbs.db",
        ".DS_Store",
        "__MACOSX",
        "raw/._x.png",
        "cutouts/desktop.ini",
        "raw/.DS_Store",
    }
    assert junk[["layout_error", "name_error"]].isna().all().all()  # ignored, not a contract breach
    assert (
        "AppleDouble" in rows.loc["raw/._x.png", "os_junk"] and "Windows" in rows.loc["Thumbs.db", "os_junk"]
    )
    assert not rows.loc[f"raw/{GID}_FrontRight.png", "present"]  # the view nobody delivered


def test_listing_flags_an_unreadable_garments_csv_a_linked_folder_and_a_name_no_text_can_hold(tmp_path, cfg):
    """What would pass the listing and then break the index, or read files from outside the batch."""
    import os

    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere, f"{GID}_Front.png")
    batch = tmp_path / "batch"
    touch(batch, f"raw/{GID}_Back.png")
    touch(batch, os.fsdecode(b"raw/caf\xe9_Back.png"))
    (batch / "cutouts").symlink_to(elsewhere)
    (batch / "garments.csv").write_bytes(b"\xff\xfe not text")
    rows = listed(batch, cfg)
    assert rows.loc["garments.csv", "layout_error"] == "garments.csv is not UTF-8 text"
    assert rows.loc["cutouts/", "layout_error"] == "cutouts/ is a symbolic link; a batch holds its own files"
    assert "cutouts/" in rows.loc[f"raw/{GID}_Back.png", "partner_missing"], "nothing read through the link"
    assert rows.loc["raw/caf\\xe9_Back.png", "name_error"].startswith("file name is not UTF-8")
    plan = md.plan_batch(batch, "studio", cfg.source)
    assert all("caf" not in (u.raw or "") for u in plan.units), "a name no text can hold is not read"


def test_views_outside_the_source_and_optional_views(tmp_path, cfg):
    touch(tmp_path, f"raw/{GID}_Back.png")
    touch(tmp_path, f"cutouts/{GID}_Back.png")
    rows = listed(tmp_path, cfg, "ccp")  # ccp: Front only, views not required
    assert "not delivered by source ccp" in rows.loc[f"raw/{GID}_Back.png", "name_error"]
    assert rows["present"].all()


def test_not_a_batch_raises(tmp_path, cfg):
    with pytest.raises(md.ContractError):
        md.plan_batch(tmp_path / "missing", "studio", cfg.source)
    with pytest.raises(md.ContractError):
        md.plan_batch(tmp_path, "studio", cfg.source)


def test_gates_stop_at_the_first_failure(tmp_path, monkeypatch):
    touch(tmp_path, "raw/zero.png", b"")
    touch(tmp_path, "raw/big.png", b"\0" * 2048)
    touch(tmp_path, "raw/bomb.png", bomb_png(100_000, 100_000))
    decode = Mock(side_effect=AssertionError("decoded a file the gates should have refused"))
    monkeypatch.setattr(md, "_decode_native", decode)
    small = md.Limits(max_file_bytes=1024, max_pixels=40_000_000, contrast_band_px=8, cutout_rgb_max_diff=8)
    zero, _ = md._load(tmp_path, "raw/zero.png", "raw", small)
    big, _ = md._load(tmp_path, "raw/big.png", "raw", small)
    bomb, image = md._load(tmp_path, "raw/bomb.png", "raw", small)
    assert zero["file_size_error"] == "zero-byte file" and "format" not in zero
    assert "exceeds the limit of 1,024 bytes" in big["file_size_error"] and "format" not in big
    assert bomb["pixels"] == 10**10 and bomb["header_size"] == "100000x100000" and image is None
    decode.assert_not_called()


def test_cutout_stats_and_pair_measures(tmp_path):
    rng = np.random.default_rng(0)
    shot, cutout = clean_pair(rng, 192, 288)
    _, other_cutout = clean_pair(rng, 192, 288)
    tmp = tmp_path
    for name, (s, c) in {"a": (shot, cutout), "b": (shot, other_cutout)}.items():
        touch(tmp, f"raw/{name}.png", encode_png(s))
        touch(tmp, f"cutouts/{name}.png", encode_png(c))
    good = {r["file"]: r for r in md.extract_unit(md.Unit(str(tmp), "raw/a.png", "cutouts/a.png"), LIMITS)}
    swapped = {r["file"]: r for r in md.extract_unit(md.Unit(str(tmp), "raw/b.png", "cutouts/b.png"), LIMITS)}
    cut = good["cutouts/a.png"]
    assert cut["has_alpha"] and cut["alpha_partial_share"] == 0 and 0.1 < cut["garment_fraction"] < 0.6
    assert cut["rgb_diff"] == 0 and cut["pair_size_match"] and good["raw/a.png"]["contrast"] > 40
    assert swapped["cutouts/b.png"]["rgb_diff"] > 8 and "contrast" not in swapped["raw/b.png"]


def test_edge_contrast_separates_garment_from_lookalike():
    image = np.full((120, 80, 3), 225, np.uint8)
    mask = np.zeros((120, 80), bool)
    mask[30:90, 20:60] = True
    image[mask] = (40, 60, 160)
    image[30:90:4, 20:60] = (50, 70, 170)  # stripes inside the garment are not an edge
    assert content.edge_contrast(image, mask, band=2) > 150
    same = np.full_like(image, 225)
    assert content.edge_contrast(same, mask, band=2) < 1
    assert content.edge_contrast(image, np.zeros_like(mask), band=2) is None
    assert content.edge_contrast(image, np.ones_like(mask), band=2) is None


def test_compare_batches_flags_a_shift():
    ref = pd.DataFrame(
        {
            "view": ["Front"] * 20,
            "garment_fraction": np.linspace(0.2, 0.3, 20),
            "brightness": 200.0,
            "contrast": 150.0,
            "alpha_partial_share": 0.0,
        }
    )
    cur = ref.assign(garment_fraction=ref["garment_fraction"] + 0.2)
    drift = compare_batches(cur, ref, z_warn=3)
    assert drift["garment_fraction/Front"]["drifted"] and not drift["contrast/Front"]["drifted"]
    assert drift["garment_fraction/Front"]["current"] == pytest.approx(0.45, abs=1e-3)


def test_checks_follow_the_source(cfg):
    studio = {s.check: s for s in build_checks(cfg, "studio")}
    ccp = build_checks(cfg, "ccp")
    assert studio["resolution"].kwargs["value_set"] == ["96x144"] and studio["views"].severity == "warning"
    assert {s.column for s in ccp if s.check == "resolution"} == {"width", "height", "aspect"}
    assert "views" not in {s.check for s in ccp}
    mask = studio["mask_area"].message({"garment_fraction": 0.0})
    assert mask.startswith("mask is empty") and "2%..85%" in mask


def test_a_source_can_turn_named_checks_into_warnings(cfg):
    ccp = {s.check: s for s in build_checks(cfg, "ccp")}
    studio = {s.check: s for s in build_checks(cfg, "studio")}
    assert ccp["mask_area"].severity == "warning" and studio["mask_area"].severity == "error"
    assert ccp["alpha_channel"].severity == "error"
    typo = cfg.sources["ccp"].model_copy(update={"warn_only": ("mask_aera",)})
    with pytest.raises(ConfigError, match="mask_aera"):
        build_checks(cfg.model_copy(update={"sources": {**cfg.sources, "ccp": typo}}), "ccp")


def test_build_metadata_reads_each_pair_once(tmp_path, cfg, monkeypatch):
    write_clean_batch(tmp_path / "b", 2, width=96, height=144, seed=5)
    reads: list[str] = []
    real = Path.read_bytes
    batch = tmp_path / "b"

    def counted(self: Path) -> bytes:
        if self.is_relative_to(batch):  # only the batch: the process may read other files meanwhile
            reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    frame = md.build_metadata(
        batch,
        cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"workers": 1})}),
    )
    assert len(frame) == 12 and len(reads) == 12 and len(set(reads)) == 6  # 6 names, raw + cutout each
    assert list(frame.columns) == list(md.COLUMNS)
