import os
import uuid
from pathlib import Path

import pytest

from garmentseg.data.contract import (
    ContractError,
    batch_id_problem,
    discover_pairs,
    parse_shot_name,
    read_garments_csv,
)

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


def test_a_name_that_is_not_utf8_is_refused_and_shown_escaped(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9_Front.png")  # as Python lists a Latin-1 name from an old zip
    with pytest.raises(ContractError, match="not UTF-8") as info:
        parse_shot_name(name)
    assert "caf\\xe9_Front.png" in str(info.value)
    str(info.value).encode("utf-8")  # printable: a report or a terminal can write it
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / name).write_bytes(b"x")
    _, problems = discover_pairs(tmp_path)
    assert dict(problems)["raw/caf\\xe9_Front.png"].startswith("file name is not UTF-8")


def test_a_linked_side_folder_is_no_part_of_the_batch(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{GID}_Front.png").write_bytes(b"x")
    batch = tmp_path / "batch"
    (batch / "cutouts").mkdir(parents=True)
    (batch / "cutouts" / f"{GID}_Front.png").write_bytes(b"x")
    (batch / "raw").symlink_to(elsewhere)
    pairs, problems = discover_pairs(batch)
    assert "symbolic link" in dict(problems)["raw/"]
    assert [p.raw for p in pairs] == [None], "nothing is read through the link"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG garbage\xff\xfe,,\n", "not UTF-8 text"),
        (b"id;type\nfoo;bar\n", "lacks the columns garment_id, garment_type, difficulty"),
    ],
)
def test_a_garments_csv_that_cannot_be_read_is_refused_by_name(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "garments.csv"
    path.write_bytes(content)
    with pytest.raises(ContractError, match=reason) as info:
        read_garments_csv(path)
    assert str(path) in str(info.value)


def test_garments_csv_rows_are_keyed_by_lower_case_id(tmp_path: Path) -> None:
    path = tmp_path / "garments.csv"
    path.write_text(f"garment_id,garment_type,difficulty\n{GID.upper()},dress,hard\n")
    assert read_garments_csv(path) == {GID: ("dress", "hard")}
    path.unlink()
    path.mkdir()
    with pytest.raises(ContractError, match="is not a file"):
        read_garments_csv(path)


@pytest.mark.parametrize("name", ["studio batch 01", "été-lot", "-leading-dash", "a/b", "x" * 129, ""])
def test_a_folder_name_that_cannot_be_a_batch_id_says_how_to_fix_it(name: str) -> None:
    problem = batch_id_problem(name)
    assert problem and "cannot name a batch" in problem and "rename the folder or pass --batch-id" in problem


@pytest.mark.parametrize("name", ["studio-0601", "b_2026.12.04", "A1"])
def test_good_batch_ids_pass(name: str) -> None:
    assert batch_id_problem(name) is None


def test_a_new_shot_is_named_as_a_contract_pair_whatever_its_image_suffix() -> None:
    from garmentseg.data.contract import parse_shot_file

    garment = "5d1c7a52-3c59-4d52-9a59-7a1f1f6e2a10"
    for suffix in (".png", ".PNG", ".jpg", ".JPEG"):
        assert parse_shot_file(f"{garment}_Front{suffix}").stem == f"{garment}_Front"
    with pytest.raises(ContractError, match=r"^shot\.tif: a shot is \.png or \.jpg or \.jpeg"):
        parse_shot_file("shot.tif")
    with pytest.raises(ContractError, match=r"^IMG_0001\.jpg: "):
        parse_shot_file("IMG_0001.jpg")
