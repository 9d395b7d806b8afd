"""The retouch round trip on real engines: a git + DVC project, the GX suite, the SQLite queue. Cutouts go
out in the data contract, corrections come back through ingest and supersede the labels, the items close;
a bad return is refused by name with nothing lost, and importing twice changes nothing."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.config import Config
from garmentseg.data import versioning
from garmentseg.data.index import read_index
from garmentseg.imageio import read_image, write_png
from garmentseg.labels.decisions import send_to_retouch, withdraw_retouch
from garmentseg.review.roundtrip import ReturnedFolderError, import_corrections
from garmentseg.review.store import SUPERSEDED, ReviewItem, ReviewQueue
from garmentseg.validation import ingest_batch
from garmentseg.validation.defects import write_clean_batch
from garmentseg.validation.ingest import ingest_lock, tree_digest
from tests.data.test_validation import H, W, small_project

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Config:
    """A git + DVC project holding one ingested studio batch, and a queue with two of its shots."""
    cfg = small_project(tmp_path / "project")
    subprocess.run(["git", "init", "-q"], cwd=cfg.root, check=True)
    versioning.init(cfg.root, cfg.path(cfg.paths.dvc_remote))
    batch = tmp_path / "landing" / "b-base"
    keys = write_clean_batch(batch, 2, width=W, height=H, seed=4)
    assert ingest_batch(batch, cfg).status == "ingested"
    queue = ReviewQueue.from_config(cfg)
    for estimate, key in zip((0.62, 0.81), keys[:2], strict=True):
        proposed = tmp_path / "proposed" / key.filename  # the model's cutout: the true one, eroded
        true = read_image(batch / "cutouts" / key.filename, max_pixels=10**7, alpha=True)
        true[..., 3] = cv2.erode(true[..., 3], np.ones((5, 5), np.uint8))
        write_png(proposed, true)
        queue.record_cutout(
            file=key.filename[:-4],
            shot=batch / "raw" / key.filename,
            cutout=proposed,
            estimate=estimate,
            needs_review=True,
            model_version="1",
            source="predict",
        )
    return cfg


def _cli(cfg: Config, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, [*args[:2], "--params", str(cfg.root / "params.yaml"), *args[2:]])
    return res.exit_code, res.stdout, res.stderr


def _index(cfg: Config):
    return read_index(cfg.path(cfg.paths.data_dir) / "index.parquet")


def _corrected(cfg: Config, returned: Path) -> None:
    """The retoucher puts the studio's true cutout in place of every proposal."""
    truths = cfg.path(cfg.paths.data_dir) / "batches" / "b-base" / "cutouts"
    for proposed in (returned / "cutouts").iterdir():
        proposed.write_bytes((truths / proposed.name).read_bytes())


def test_export_retouch_import_supersedes_the_labels_and_closes_the_items(
    project: Config, tmp_path: Path
) -> None:
    code, out, _ = _cli(project, "review", "list", "--json")
    items = json.loads(out)["items"]
    assert code == 0 and [i["estimate"] for i in items] == [0.62, 0.81]
    assert set(items[0]) == {"id", "file", "state", "estimate", "decided_by", "decided_at"}
    code, out, _ = _cli(project, "review", "stats", "--json")
    (logged,) = json.loads(out)["cutouts"]
    assert code == 0 and (logged["model_version"], logged["cutouts"], logged["doubtful"]) == ("1", 2, 2)
    assert logged["mean_estimate"] == pytest.approx((0.62 + 0.81) / 2)
    assert _cli(project, "review", "decide", str(items[0]["id"]), "--retouch", "--by", "ana")[0] == 0

    assert "1 items exported" in _cli(project, "review", "export", str(tmp_path / "only-retouch"))[1]
    returned = tmp_path / "returned"
    assert "2 items exported" in _cli(project, "review", "export", str(returned), "--pending")[1]
    names = sorted(p.name for p in (returned / "cutouts").iterdir())
    assert (
        names
        == sorted(p.name for p in (returned / "raw").iterdir())
        == sorted(f"{i['file']}.png" for i in items)
    )

    # The retoucher: the studio's true cutout, saved by another program (other bytes, same pixels).
    data = project.path(project.paths.data_dir)
    before, version_before = _index(project), versioning.data_version(project)
    for name in names:
        true = cv2.imread(str(data / "batches" / "b-base" / "cutouts" / name), cv2.IMREAD_UNCHANGED)
        _ok, png = cv2.imencode(".png", true, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        (returned / "cutouts" / name).write_bytes(png.tobytes())
    sent = {name: (returned / "cutouts" / name).read_bytes() for name in names}

    code, out, err = _cli(project, "review", "import", str(returned), "--by", "ana")
    assert code == 0, out + err
    after = _index(project)
    assert len(after) == len(before) and not after.duplicated(["garment_id", "view"]).any()
    assert (after.set_index("garment_id")["split"].to_dict()) == before.set_index("garment_id")[
        "split"
    ].to_dict()
    for name in names:
        (row,) = after[after["cutout_path"].str.endswith(f"/cutouts/{name}")].itertuples()
        assert row.batch_id.startswith("review-")
        assert (data / row.cutout_path).read_bytes() == sent[name]  # stored byte for byte
    assert versioning.data_version(project) != version_before
    code, out, _ = _cli(project, "review", "list", "--json")
    closed = json.loads(out)["items"]
    assert [i["state"] for i in closed] == ["closed", "closed"]
    assert [i["decided_by"] for i in closed] == ["ana", "ana"]

    version = versioning.data_version(project)  # the same folder again changes nothing
    code, out, _ = _cli(project, "review", "import", str(returned))
    assert code == 0 and "0 queue items closed" in out
    assert versioning.data_version(project) == version and _index(project).equals(after)


def test_a_returned_cutout_that_fails_validation_is_refused_by_name_and_kept(
    project: Config, tmp_path: Path
) -> None:
    returned = tmp_path / "returned"
    _cli(project, "review", "export", str(returned), "--pending")
    _corrected(project, returned)
    bad = sorted((returned / "cutouts").iterdir())[0]
    cutout = read_image(bad, max_pixels=10**7, alpha=True)
    cutout[..., 3] = 255 - cutout[..., 3]  # the retoucher inverted the mask
    write_png(bad, cutout)
    digest, version = tree_digest(returned), versioning.data_version(project)
    code, _out, err = _cli(project, "review", "import", str(returned))
    assert code == 1
    assert f"refused cutouts/{bad.name}" in err
    quarantined = project.path(project.paths.quarantine_dir)
    (kept,) = [p for p in quarantined.iterdir() if p.is_dir()]
    assert {k: v for k, v in tree_digest(kept).items() if not k.startswith("_report/")} == digest
    assert versioning.data_version(project) == version
    assert {i.state for i in ReviewQueue.from_config(project).items()} == {"pending"}

    _corrected(project, kept)  # the retoucher fixes it where it sits, beside its report, and imports it
    code, out, err = _cli(project, "review", "import", str(kept))
    assert code == 0 and "2 queue items closed" in out, out + err


def test_an_import_folder_with_a_stray_folder_a_dead_link_or_no_files_is_refused_by_name(
    project: Config, tmp_path: Path
) -> None:
    """The batch id comes from the folder's files before validation runs: what is not a file is left to
    validation (quarantined, named), and a folder with nothing to import is an error, not a traceback."""
    exported = tmp_path / "exported"
    assert _cli(project, "review", "export", str(exported), "--pending")[0] == 0
    _corrected(project, exported)
    (exported / "raw" / "extra").mkdir()
    (exported / "cutouts" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, out, err = _cli(project, "review", "import", str(exported), "--no-push")
    assert code == 1 and "failed validation" in out, out + err
    assert "refused raw/extra: layout: unexpected folder inside raw/" in err
    assert "refused cutouts/gone.png: layout: unexpected symbolic link inside cutouts/" in err
    empty = tmp_path / "empty"
    (empty / "raw").mkdir(parents=True)
    code, out, err = _cli(project, "review", "import", str(empty), "--no-push")
    assert code == 1 and f"{empty}: no files in raw/ or cutouts/ to import" in err, out + err
    assert "Traceback" not in out + err


def test_a_second_round_of_corrections_wins_over_the_first_and_the_original(tmp_path: Path) -> None:
    """The original batch's id sorts after the imports' ("studio-" > "review-") and the first round replaces
    every pair it held: the latest delivery is still the active label, on a fresh reindex too. The second
    round answers the audit sending the first round's labels back to retouch, their items closed before."""
    cfg = small_project(tmp_path / "project")
    subprocess.run(["git", "init", "-q"], cwd=cfg.root, check=True)
    versioning.init(cfg.root, cfg.path(cfg.paths.dvc_remote))
    original = tmp_path / "landing" / "studio-0601"
    keys = write_clean_batch(original, 1, width=W, height=H, seed=5)
    assert ingest_batch(original, cfg).status == "ingested"
    data, queue = cfg.path(cfg.paths.data_dir), ReviewQueue.from_config(cfg)
    for key in keys:  # the model's cutouts, queued: the true ones eroded
        proposed = tmp_path / "proposed" / key.filename
        write_png(
            proposed, _eroded(read_image(original / "cutouts" / key.filename, max_pixels=10**7, alpha=True))
        )
        queue.record(
            file=key.stem,
            shot=original / "raw" / key.filename,
            cutout=proposed,
            estimate=0.5,
            model_version="1",
            source="predict",
        )
    sent: dict[str, bytes] = {}
    for round_ in (1, 2):
        delivery = tmp_path / f"round-{round_}"
        for side in ("raw", "cutouts"):
            (delivery / side).mkdir(parents=True)
            for shot in sorted((original / side).iterdir()):
                image = cv2.imread(str(shot), cv2.IMREAD_UNCHANGED)
                if side == "cutouts" and round_ == 2:  # the second retoucher softens one pixel
                    alpha = image[..., 3]
                    alpha.flat[np.flatnonzero(alpha == 255)[0]] = 254
                png = cv2.imencode(".png", image)[1].tobytes()
                (delivery / side / shot.name).write_bytes(png)
                sent[f"{side}/{shot.name}"] = png
        code, out, err = _cli(cfg, "review", "import", str(delivery), "--no-push")
        assert code == 0 and f"{len(keys)} queue items closed" in out, out + err
        index = _index(cfg)
        assert index["batch_id"].nunique() == 1 and index["batch_id"].iloc[0].startswith("review-"), index
        for row in index.itertuples():
            assert (data / row.cutout_path).read_bytes() == sent[f"cutouts/{Path(row.cutout_path).name}"]
            # the audit confirms the label wrong: its closed item goes back to retouch with it
            entry = {"by": "steward"}
            item = send_to_retouch(
                cfg, f"{row.garment_id}_{row.view}", data / row.raw_path, data / row.cutout_path, entry
            )
            assert item["state"] == "retouch"
    latest = _index(cfg)
    assert _cli(cfg, "data", "index", "--fresh")[0] == 0
    assert _index(cfg).equals(latest), "a fresh reindex picks the same rows"
    # confirmed wrong again, then released: the closed predict item reopened by the audit is withdrawn
    row = next(latest.itertuples())
    file = f"{row.garment_id}_{row.view}"
    sent_back = send_to_retouch(cfg, file, data / row.raw_path, data / row.cutout_path, {"by": "steward"})
    reopened = queue.get(sent_back["review_item"])
    assert (reopened.state, reopened.source, reopened.estimate) == ("retouch", "label-audit", 0.0)
    assert withdraw_retouch(cfg, file, "steward") == [reopened.id]


def _eroded(cutout: np.ndarray) -> np.ndarray:
    cutout[..., 3] = cv2.erode(cutout[..., 3], np.ones((5, 5), np.uint8))
    return cutout


def test_an_import_takes_only_corrections_of_open_items_and_leaves_the_folder_otherwise(
    project: Config, tmp_path: Path
) -> None:
    """Refused by name, exit 2, nothing moved or ingested, items still open: an untouched proposal, an edited
    shot, a pair of a rejected item, a pair nobody queued. Corrected alone, the same folder goes in."""
    queue = ReviewQueue.from_config(project)
    returned = tmp_path / "returned"
    assert _cli(project, "review", "export", str(returned), "--pending")[0] == 0
    first, second = sorted(queue.items(), key=lambda i: i.id)
    shot = returned / "raw" / f"{first.file}.png"
    edited = read_image(shot, max_pixels=10**7)
    edited[:8] = 255 - edited[:8]
    write_png(shot, edited)
    stranger = tmp_path / "stranger"
    stranger_key = write_clean_batch(stranger, 1, width=W, height=H, seed=11)[0]
    for side in ("raw", "cutouts"):
        (returned / side / stranger_key.filename).write_bytes(
            (stranger / side / stranger_key.filename).read_bytes()
        )
    digest, version = tree_digest(returned), versioning.data_version(project)
    code, out, err = _cli(project, "review", "import", str(returned), "--no-push")
    assert code == 2, out + err
    assert f"raw/{first.file}.png: not the shot queued as item {first.id}" in err
    assert f"cutouts/{second.file}.png: the proposed cutout of item {second.id}, unchanged" in err
    assert f"cutouts/{stranger_key.filename}: no review item for {stranger_key.stem}" in err
    assert tree_digest(returned) == digest and versioning.data_version(project) == version
    assert not any(project.path(project.paths.quarantine_dir).glob("*"))

    assert _cli(project, "review", "decide", str(second.id), "--reject", "--by", "ana")[0] == 0
    code, out, err = _cli(project, "review", "import", str(returned), "--no-push")
    assert code == 2 and f"review item {second.id} for {second.file} was rejected by ana" in err, out + err
    assert {i.state for i in queue.items()} == {"pending", "rejected"}

    for side in ("raw", "cutouts"):
        (returned / side / stranger_key.filename).unlink()
        (returned / side / f"{second.file}.png").unlink()
    shot.write_bytes(
        (project.path(project.paths.data_dir) / "batches" / "b-base" / "raw" / shot.name).read_bytes()
    )
    _corrected(project, returned)
    code, out, err = _cli(project, "review", "import", str(returned), "--no-push")
    assert code == 0 and "1 queue items closed" in out, out + err
    assert {(i.id, i.state) for i in queue.items()} == {(first.id, "closed"), (second.id, "rejected")}


def test_two_folders_correcting_one_item_at_once_let_only_the_first_in(
    project: Config, tmp_path: Path
) -> None:
    """Two retouchers return the same item at the same moment: the queue is read under the ingest lock, so
    the import that waited finds the item closed and is refused, instead of a second correction entering."""
    queue = ReviewQueue.from_config(project)
    first, second = sorted(queue.items(), key=lambda i: i.id)
    folders = {name: tmp_path / name for name in ("ana", "ben")}
    truths = project.path(project.paths.data_dir) / "batches" / "b-base" / "cutouts"
    for name, folder in folders.items():
        assert _cli(project, "review", "export", str(folder), "--pending")[0] == 0
        for side in ("raw", "cutouts"):
            (folder / side / f"{second.file}.png").unlink()
        true = read_image(truths / f"{first.file}.png", max_pixels=10**7, alpha=True)
        if name == "ben":
            true[..., 3] = cv2.dilate(true[..., 3], np.ones((3, 3), np.uint8))
        write_png(folder / "cutouts" / f"{first.file}.png", true)

    outcome: dict[str, object] = {}

    def import_ana() -> None:
        try:
            outcome["ana"] = import_corrections(
                project, ReviewQueue.from_config(project), folders["ana"], by="ana", push=False
            )
        except ReturnedFolderError as exc:
            outcome["ana"] = exc

    waiting = threading.Thread(target=import_ana)
    with ingest_lock(project):  # ben's import is under way: ana's waits for it
        waiting.start()
        time.sleep(3)
        assert waiting.is_alive()
        ben = import_corrections(project, queue, folders["ben"], by="ben", push=False)
    waiting.join(timeout=300)
    assert ben.ok and ben.closed == [first.id]
    # the steward finds the import's Data Docs run under its batch id, not the retoucher's folder name
    assert f"/{ben.outcome.batch_id}/" in str(ben.outcome.data_docs_page)
    assert isinstance(outcome["ana"], ReturnedFolderError), outcome
    assert f"review item {first.id} for {first.file} is closed" in str(outcome["ana"])
    assert folders["ana"].is_dir()
    batches = project.path(project.paths.data_dir) / "batches"
    assert len([b for b in batches.iterdir() if b.is_dir() and b.name.startswith("review-")]) == 1


def test_export_writes_over_nothing_it_did_not_write_nor_into_the_platforms_folders(
    project: Config, tmp_path: Path
) -> None:
    returned = tmp_path / "returned"
    assert _cli(project, "review", "export", str(returned), "--pending")[0] == 0
    assert _cli(project, "review", "export", str(returned), "--pending")[0] == 0  # the same files: fine
    _corrected(project, returned)
    edits = tree_digest(returned)
    code, out, err = _cli(project, "review", "export", str(returned), "--pending")
    assert code == 1 and "would write over files that hold something else" in err, out + err
    assert tree_digest(returned) == edits
    inside = project.path(project.paths.data_dir) / "batches" / "b-base"
    code, out, err = _cli(project, "review", "export", str(inside), "--pending")
    assert code == 1 and "inside the dataset" in err and not (inside / "raw" / "x").exists()
    for ground in (project.root, project.path(project.paths.reports_dir) / "x", tmp_path / "linked"):
        if ground.name == "linked":  # raw/ a link into the dataset: where it points is what counts
            (ground / "raw").parent.mkdir(parents=True)
            (ground / "raw").symlink_to(inside / "raw")
        code, out, err = _cli(project, "review", "export", str(ground), "--pending")
        assert code == 1 and ("holds the dataset" in err or "inside the" in err), out + err
    item = ReviewQueue.from_config(project).items()[0]
    item.cutout_path.unlink()
    fresh = tmp_path / "fresh"
    code, out, err = _cli(project, "review", "export", str(fresh), "--pending")
    assert code == 1 and f"review item {item.id} ({item.file}): its stored file" in err and not fresh.exists()


def test_export_hands_each_retoucher_a_share_by_id_or_by_count(project: Config, tmp_path: Path) -> None:
    worst, better = sorted(ReviewQueue.from_config(project).items(), key=lambda i: i.estimate)

    def exported(folder: Path) -> list[str]:
        return sorted(p.stem for p in (folder / "cutouts").iterdir())

    assert _cli(project, "review", "export", str(tmp_path / "ana"), "--pending", "--limit", "1")[0] == 0
    assert exported(tmp_path / "ana") == [worst.file]
    assert (
        _cli(project, "review", "export", str(tmp_path / "ben"), "--pending", "--id", str(better.id))[0] == 0
    )
    assert exported(tmp_path / "ben") == [better.file]

    both = ("--pending", "--id", str(better.id), "--id", str(worst.id), "--limit", "1")
    assert _cli(project, "review", "export", str(tmp_path / "dan"), *both)[0] == 0
    assert exported(tmp_path / "dan") == [worst.file]  # the ids given, still worst first

    assert _cli(project, "review", "decide", str(worst.id), "--reject", "--by", "ana")[0] == 0
    ids = ("--id", str(better.id), "--id", str(worst.id), "--id", "99")
    code, _, err = _cli(project, "review", "export", str(tmp_path / "cleo"), *ids)
    assert code == 1 and f"review item {better.id} is pending: give --pending" in err, err
    assert f"review item {worst.id} is rejected: only open items" in err and "item 99 does not exist" in err
    assert not (tmp_path / "cleo").exists()


def test_a_reshot_queued_under_an_open_items_name_supersedes_it(project: Config, tmp_path: Path) -> None:
    """A studio re-shot a garment and view while the first shot's item is still open: the new shot is the
    one to retouch; the old item is rejected by the platform, and a correction of it is refused as such."""
    queue = ReviewQueue.from_config(project)
    first = queue.items()[0]
    old_export = tmp_path / "old"
    assert _cli(project, "review", "export", str(old_export), "--pending")[0] == 0
    reshot = tmp_path / "reshot.png"
    write_png(reshot, 255 - read_image(first.shot_path, max_pixels=10**7))
    newer = _queue_another_shot(queue, first, reshot)
    assert queue.get(first.id).state == "rejected" and queue.get(first.id).decided_by == SUPERSEDED
    code, out, err = _cli(project, "review", "export", str(tmp_path / "out"), "--pending")
    assert code == 0, out + err
    exported = read_image(tmp_path / "out" / "raw" / f"{first.file}.png", max_pixels=10**7)
    assert np.array_equal(exported, read_image(newer.shot_path, max_pixels=10**7))

    _corrected(project, old_export)  # the retoucher finishes the old shot anyway
    code, out, err = _cli(project, "review", "import", str(old_export), "--no-push")
    assert code == 2 and f"the shot of review item {first.id}, superseded" in err, out + err


def test_a_16_bit_shot_is_exported_as_the_8_bit_rgb_the_contract_takes(
    project: Config, tmp_path: Path
) -> None:
    """The shot is queued as it came (a 16-bit PNG of the same picture); its correction must come back in
    a mode validation takes, or the retoucher's work would be quarantined."""
    queue = ReviewQueue.from_config(project)
    item = queue.items()[0]
    deep = read_image(item.shot_path, max_pixels=10**7).astype(np.uint16) * 257
    shots = tmp_path / "in"
    shots.mkdir()
    cv2.imwrite(str(shots / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    _queue_another_shot(queue, item, shots / "deep.png")
    returned = tmp_path / "returned"
    assert _cli(project, "review", "export", str(returned), "--pending")[0] == 0
    exported = cv2.imread(str(returned / "raw" / f"{item.file}.png"), cv2.IMREAD_UNCHANGED)
    assert exported.dtype == np.uint8 and exported.ndim == 3 and exported.shape[2] == 3
    _corrected(project, returned)
    code, out, err = _cli(project, "review", "import", str(returned), "--no-push")
    assert code == 0 and "2 queue items closed" in out, out + err


def test_a_shot_queued_as_jpeg_bytes_under_a_png_name_is_exported_as_a_png(
    project: Config, tmp_path: Path
) -> None:
    """predict names by suffix: a camera JPEG renamed .png is queued as it came; the contract holds PNGs."""
    from garmentseg.imageio import sniff_format

    queue = ReviewQueue.from_config(project)
    item = queue.items()[0]
    shot = read_image(item.shot_path, max_pixels=10**7)
    disguised = tmp_path / "in" / f"{item.file}.png"
    disguised.parent.mkdir()
    disguised.write_bytes(cv2.imencode(".jpg", cv2.cvtColor(255 - shot, cv2.COLOR_RGB2BGR))[1].tobytes())
    jpeg_item = _queue_another_shot(queue, item, disguised)
    assert queue.get(item.id).state == "rejected"  # superseded: one open item under this name
    assert _cli(project, "review", "export", str(tmp_path / "out"), "--pending")[0] == 0
    exported = (tmp_path / "out" / "raw" / f"{item.file}.png").read_bytes()
    assert sniff_format(exported) == "png" and jpeg_item.shot_path.read_bytes()[:2] == b"\xff\xd8"


def _queue_another_shot(queue: ReviewQueue, item: ReviewItem, shot: Path) -> ReviewItem:
    """Another shot queued under the item's name (a studio's re-shoot), with the item's proposal."""
    return queue.record(
        file=item.file, shot=shot, cutout=item.cutout_path, estimate=0.5, model_version="1", source="predict"
    )
