import uuid
from pathlib import Path

import pytest

from garmentseg.data.contract import ContractError, discover_pairs, parse_shot_name

GID = "0b0b3b4f-a063-4b47-a4ea-90a3386d06e0"


@pytest.mark.parametrize("view", ["Front", "FrontRight", "Back"])
def test_good_names_parse(view: str) -> None:
    key = parse_shot_name(f"{GID}_{view}.png")
    assert key.garment_id == GID and key.view == view
    assert key.filename == f"{GID}_{view}.png"


def test_uppercase_uuid_is_normalised() -> None:
    assert parse_shot_name(f"{GID.upper()}_Front.png").garment_id == GID


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (f"{GID}_Side.png", "view 'Side'"),
        (f"{GID}_Front.jpg", "name must be"),
        (f"{GID}_front.png", "view 'front'"),
        ("garment42_Front.png", "not a UUID"),
        (f"{GID.replace('-', '')}_Front.png", "canonical"),
        (f"{GID}.png", "name must be"),
        (f"{GID}_Front_v2.png", "name must be"),
    ],
)
def test_bad_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason) as info:
        parse_shot_name(name)
    assert name in str(info.value)


def test_discover_pairs_reports_orphans_and_strays(tmp_path: Path) -> None:
    other = str(uuid.uuid4())
    for side in ("raw", "cutouts"):
        (tmp_path / side).mkdir()
        (tmp_path / side / f"{GID}_Front.png").write_bytes(b"x")
    (tmp_path / "raw" / f"{other}_Back.png").write_bytes(b"x")
    (tmp_path / "cutouts" / "notes.txt").write_text("hi")
    (tmp_path / "stray.png").write_bytes(b"x")
    pairs, problems = discover_pairs(tmp_path)
    by_view = {p.key.view: p for p in pairs}
    assert (
        by_view["Front"].raw == f"raw/{GID}_Front.png"
        and by_view["Front"].cutout == f"cutouts/{GID}_Front.png"
    )
    assert by_view["Back"].cutout is None
    flagged = dict(problems)
    assert "cutouts/notes.txt" in flagged and "stray.png" in flagged


def test_not_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="not a batch"):
        discover_pairs(tmp_path)
    with pytest.raises(ContractError, match="does not exist"):
        discover_pairs(tmp_path / "missing")
