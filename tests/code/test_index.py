"""The index and the garment-level split rule."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd
import pytest

from garmentseg.config import Config, SplitConfig, load_config
from garmentseg.data.contract import GARMENTS_CSV
from garmentseg.data.index import (
    INDEX_COLUMNS,
    SPLITS,
    assign_split,
    build_index,
    check_index,
    index_folder,
    load_dataset,
    read_index,
    write_index,
    write_ingest_record,
)
from garmentseg.data.synth import synthesize

W, H = 64, 96


@pytest.fixture(scope="module")
def tiny_batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny synthetic batches (different seeds, so disjoint garments)."""
    cfg = load_config("demo", Path(__file__).resolve().parents[2] / "params.yaml")
    root = tmp_path_factory.mktemp("batches")
    return {
        name: synthesize(root / name, 4, seed, cfg, workers=1, width=W, height=H).out_dir
        for name, seed in (("base", 1), ("b1", 2), ("b2", 3))
    }


def test_split_is_deterministic_and_seeded() -> None:
    splits = SplitConfig(seed=1, train=0.7, valid=0.15, test=0.15)
    other = SplitConfig(seed=2, train=0.7, valid=0.15, test=0.15)
    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(300)]
    first = [assign_split(g, splits) for g in ids]
    assert first == [assign_split(g, splits) for g in ids]
    assert first != [assign_split(g, other) for g in ids]
    assert assign_split(ids[0].upper(), splits) == first[0]


def test_split_fractions_roughly_respected() -> None:
    splits = SplitConfig(seed=1152, train=0.7, valid=0.15, test=0.15)
    counts = pd.Series([assign_split(str(uuid.UUID(int=i, version=4)), splits) for i in range(4000)])
    shares = counts.value_counts(normalize=True)
    for name in SPLITS:
        assert abs(shares[name] - getattr(splits, name)) < 0.03, shares


def test_index_folder_rows(tiny_batches: dict[str, Path], cfg: Config) -> None:
    df = index_folder(tiny_batches["base"], cfg)
    assert list(df.columns) == INDEX_COLUMNS
    assert len(df) == 12 and df["garment_id"].nunique() == 4
    assert (df["width"] == W).all() and (df["height"] == H).all()
    assert df["raw_path"].str.startswith("raw/").all() and df["cutout_path"].str.startswith("cutouts/").all()
    assert (df["batch_id"] == "base").all()
    assert not check_index(df)
    meta = pd.read_csv(tiny_batches["base"] / GARMENTS_CSV).set_index("garment_id")
    for row in df.itertuples():
        assert row.split == assign_split(row.garment_id, cfg.data.splits)
        assert row.difficulty == meta.loc[row.garment_id, "difficulty"]
        assert row.garment_type == meta.loc[row.garment_id, "garment_type"]
        assert len(row.raw_sha256) == 64 and row.raw_sha256 != row.cutout_sha256


def test_without_garments_csv_is_unknown(tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path) -> None:
    batch = shutil.copytree(tiny_batches["b1"], tmp_path / "plain")
    (batch / GARMENTS_CSV).unlink()
    df = index_folder(batch, cfg, batch_id="x")
    assert set(df["difficulty"]) == {"unknown"} and set(df["garment_type"]) == {"unknown"}
    assert set(df["batch_id"]) == {"x"}


def _data_dir(tmp_path: Path, batches: dict[str, Path], names: list[str]) -> Path:
    data = tmp_path / "data"
    shutil.copytree(batches["base"], data / "synth" / "demo")
    for name in names:
        shutil.copytree(batches[name], data / "batches" / name)
    return data


def test_build_index_over_synth_and_batches(
    tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path
) -> None:
    data = _data_dir(tmp_path, tiny_batches, ["b1", "b2"])
    df = build_index(data, cfg)
    assert len(df) == 36 and not check_index(df)
    assert set(df["batch_id"]) == {"synth/demo", "b1", "b2"}
    for rel in df["raw_path"]:
        assert (data / rel).is_file()
    assert df.groupby("garment_id")["split"].nunique().max() == 1


def test_adding_a_batch_never_moves_a_garment(
    tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path
) -> None:
    data = _data_dir(tmp_path, tiny_batches, ["b1"])
    before = build_index(data, cfg)
    shutil.copytree(tiny_batches["b2"], data / "batches" / "b2")
    # Even with another split seed, garments already indexed keep their split.
    moved = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(
                update={"splits": SplitConfig(seed=99, train=0.5, valid=0.25, test=0.25)}
            )
        }
    )
    after = build_index(data, moved, previous=before)
    merged = before.merge(after, on=["garment_id", "view"], suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["split_before"] == merged["split_after"]).all()
    new = after[after["batch_id"] == "b2"]
    assert all(row.split == assign_split(row.garment_id, moved.data.splits) for row in new.itertuples())


def test_a_pair_delivered_again_supersedes_the_indexed_one_and_keeps_its_split(
    tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path
) -> None:
    data = _data_dir(tmp_path, tiny_batches, [])
    before = build_index(data, cfg)
    garment, view = before.iloc[0]["garment_id"], before.iloc[0]["view"]
    name = f"{garment}_{view}.png"
    for batch in ("zz-first", "aa-second"):  # ingest order, not name order, decides
        correction = data / "batches" / batch
        for side in ("raw", "cutouts"):
            (correction / side).mkdir(parents=True)
            shutil.copyfile(tiny_batches["base"] / side / name, correction / side / name)
        (correction / "cutouts" / name).write_bytes(
            (correction / "cutouts" / name).read_bytes() + batch.encode()
        )
        before = build_index(data, cfg, previous=before)
        assert not check_index(before) and len(before) == 12
        (row,) = before[(before["garment_id"] == garment) & (before["view"] == view)].itertuples()
        assert row.batch_id == batch and row.split == assign_split(garment, cfg.data.splits)
        assert (data / row.cutout_path).read_bytes().endswith(batch.encode())
    assert (data / "batches" / "zz-first").is_dir()  # the superseded label stays, for earlier data versions
    unordered = build_index(data, cfg)  # no previous index: the last batch id wins
    assert (
        unordered.loc[unordered["garment_id"].eq(garment) & unordered["view"].eq(view), "batch_id"].item()
        == "zz-first"
    )


def test_the_delivery_ingested_last_is_active_whatever_the_batch_ids_and_the_previous_index(
    tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path
) -> None:
    """Two corrections of one shot: the original's only row goes after the first, so the previous index
    no longer knows it; the second correction still wins, and a fresh reindex agrees."""
    data = _data_dir(tmp_path, tiny_batches, [])
    garment = build_index(data, cfg).iloc[0]["garment_id"]
    name = f"{garment}_Front.png"
    previous = None
    for batch, moment in (("zz-original", "08:00"), ("aa-fix1", "09:00"), ("ab-fix2", "10:00")):
        delivery = data / "batches" / batch
        for side in ("raw", "cutouts"):
            (delivery / side).mkdir(parents=True)
            shutil.copyfile(tiny_batches["base"] / side / name, delivery / side / name)
        (delivery / "cutouts" / name).write_bytes((delivery / "cutouts" / name).read_bytes() + batch.encode())
        write_ingest_record(delivery, f"2026-12-04T{moment}:00.000000+00:00")
        previous = build_index(data, cfg, previous=previous)
        active = previous[(previous["garment_id"] == garment) & (previous["view"] == "Front")]
        assert active["batch_id"].tolist() == [batch], f"after {batch}"
    fresh = build_index(data, cfg)
    assert (
        fresh.loc[fresh["garment_id"].eq(garment) & fresh["view"].eq("Front"), "batch_id"].item() == "ab-fix2"
    )
    assert (
        (data / fresh[fresh["batch_id"] == "ab-fix2"]["cutout_path"].item()).read_bytes().endswith(b"ab-fix2")
    )


def test_check_index_refuses_two_active_rows_for_one_garment_view(
    tiny_batches: dict[str, Path], cfg: Config
) -> None:
    df = index_folder(tiny_batches["base"], cfg)
    assert any("appears more than once" in p for p in check_index(pd.concat([df, df.iloc[:1]])))


def test_check_index_flags_a_garment_in_two_splits(tiny_batches: dict[str, Path], cfg: Config) -> None:
    df = index_folder(tiny_batches["base"], cfg)
    df.loc[0, "split"] = "test" if df.loc[0, "split"] != "test" else "train"
    assert any("several splits" in p for p in check_index(df))


def test_write_read_and_load_dataset(tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path) -> None:
    data = _data_dir(tmp_path, tiny_batches, ["b1"])
    df = build_index(data, cfg)
    write_index(df, data / "index.parquet")
    back, root = load_dataset(cfg, data)
    pd.testing.assert_frame_equal(back, df)
    assert root == data
    assert read_index(data / "index.parquet").equals(df)
    from_file, root = load_dataset(cfg, data / "index.parquet")
    pd.testing.assert_frame_equal(from_file, df)
    assert root == data
    folder, root = load_dataset(cfg, tiny_batches["b2"])
    assert root == tiny_batches["b2"] and len(folder) == 12
    assert (folder["raw_path"].map(lambda p: (root / p).is_file())).all()


def test_load_dataset_defaults_to_the_configured_data_dir(
    tiny_batches: dict[str, Path], cfg: Config, tmp_path: Path
) -> None:
    data = _data_dir(tmp_path, tiny_batches, ["b1"])
    configured = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"data_dir": data})})
    built, root = load_dataset(configured)  # no index yet: built from synth/ and batches/
    assert root == data
    pd.testing.assert_frame_equal(built, build_index(data, cfg))
    write_index(built.assign(split="test"), data / "index.parquet")
    indexed, _ = load_dataset(configured)  # the index file wins once there is one
    assert set(indexed["split"]) == {"test"}
