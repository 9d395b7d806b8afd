"""Batch validation end to end: a batch with one file per defect beside clean pairs, and clean batches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.config import Config, load_config
from garmentseg.validation import ValidationResult, validate_batch
from garmentseg.validation.defects import DEFECTS, Defect, inject_defects, write_clean_batch

ROOT = Path(__file__).resolve().parents[2]
W, H = 288, 432
GARMENTS = 12  # 36 garment/views: 29 take a defect, 7 stay clean


def small_project(folder: Path, workers: int = 1) -> Config:
    """params.yaml with a small studio size and every path under `folder`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sources"]["studio"].update(width=W, height=H)
    params["validation"]["workers"] = workers
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return load_config("demo", folder / "params.yaml")


def pairs(findings: list[dict], severity: str) -> set[tuple[str, str]]:
    return {(f["file"], f["check"]) for f in findings if f["severity"] == severity}


def expected(defects: list[Defect], severity: str) -> set[tuple[str, str]]:
    return {
        (f, c) for d in defects if d.severity == severity for f, checks in d.expected.items() for c in checks
    }


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> dict:
    """A clean batch validated first (it becomes the drift reference), then the broken one (2 workers)."""
    tmp = tmp_path_factory.mktemp("validation")
    cfg = small_project(tmp / "project", workers=2)
    clean, broken = tmp / "landing" / "b-clean", tmp / "landing" / "b-broken"
    write_clean_batch(clean, GARMENTS, width=W, height=H, seed=1)
    write_clean_batch(broken, GARMENTS, width=W, height=H, seed=2)
    defects = inject_defects(broken)
    return {
        "cfg": cfg,
        "clean": validate_batch(clean, cfg),
        "broken": validate_batch(broken, cfg),
        "defects": defects,
        "tmp": tmp,
    }


def test_exactly_the_bad_files_are_flagged(validated):
    broken: ValidationResult = validated["broken"]
    assert pairs(broken.findings, "error") == expected(validated["defects"], "error")
    assert pairs(broken.findings, "warning") == expected(validated["defects"], "warning")
    assert not broken.passed and broken.exit_code == 1


@pytest.mark.parametrize("kind", sorted(DEFECTS))
def test_each_defect_is_reported_with_its_reason(validated, kind):
    defect = next(d for d in validated["defects"] if d.kind == kind)
    for file, checks in defect.expected.items():
        found = [f for f in validated["broken"].findings if f["file"] == file]
        assert sorted(f["check"] for f in found) == sorted(checks), (kind, found)
        assert all(f["severity"] == defect.severity and f["message"] for f in found)


def test_messages_name_the_value_and_the_rule(validated):
    by_check = {f["check"]: f["message"] for f in validated["broken"].findings}
    assert "100000x100000" in by_check["max_pixels"] and "40,000,000" in by_check["max_pixels"]
    assert "216x324" in by_check["resolution"] and f"{W}x{H}" in by_check["resolution"]
    assert "floor 12" in by_check["contrast"]
    assert "limit 2.0%" in by_check["alpha_binary"]
    formats = [f["message"] for f in validated["broken"].findings if f["check"] == "format"]
    assert any("content is JPEG (YCbCr colour 8-bit), not PNG" in m for m in formats)
    modes = [f["message"] for f in validated["broken"].findings if f["check"] == "colour_mode"]
    assert any("shot is greyscale 8-bit;" in m for m in modes)
    assert any("shot is RGB 8-bit holding only grey pixels (R = G = B)" in m for m in modes)
    assert "looks inverted" in by_check["alpha_inverted"] and "limit 50%" in by_check["alpha_inverted"]
    assert "left" in by_check["mask_border"] and "floor 0.75" in by_check["edge_alignment"]
    assert (
        "(identical bytes)" in by_check["duplicate_shot"] and "hash bits" in by_check["near_duplicate_shot"]
    )
    assert any("not an image" in m for m in formats)
    assert "zero-byte" in by_check["file_size"]


def test_clean_pairs_have_no_error_finding(validated):
    clean: ValidationResult = validated["clean"]
    assert clean.passed and clean.exit_code == 0 and clean.findings == []
    assert clean.summary["pairs"] == GARMENTS * 3 and clean.summary["files"] == GARMENTS * 6
    stats = clean.metadata
    assert stats["contrast"].notna().sum() == GARMENTS * 3 and stats["contrast"].min() > 40


def test_report_files(validated):
    broken: ValidationResult = validated["broken"]
    report = broken.report_dir
    assert report == validated["cfg"].path("var/reports") / "b-broken"
    findings = json.loads((report / "findings.json").read_text())
    assert findings == broken.findings
    assert all(set(f) == {"file", "check", "severity", "message"} for f in findings)
    table = pd.read_parquet(report / "metadata.parquet")
    assert len(table) == len(broken.metadata) and "garment_fraction" in table
    gallery = (report / "gallery.html").read_text()
    bomb = next(f for f, c in pairs(findings, "error") if c == "max_pixels")
    assert "data:image/jpeg;base64," in gallery and bomb in gallery
    assert broken.data_docs_page and broken.data_docs_page.is_file()
    page = broken.data_docs_page.read_text()
    assert bomb in page  # the per-row expectation lists the failing file by name
    assert broken.data_docs_index and broken.data_docs_index.is_file()
    index = broken.data_docs_index.read_text()
    assert "b-broken" in index and "b-clean" in index  # one site for all batches


def test_summary_shows_counts_worst_files_drift_and_links(validated):
    text = validated["broken"].text()
    assert "FAILED" in text and "errors by check:" in text and "worst files:" in text
    assert "drift vs b-clean" in text and "Data Docs:" in text and "gallery.html" in text
    assert validated["broken"].reference.parent.name == "b-clean"
    assert "garment_fraction/Front" in validated["broken"].drift


@pytest.mark.parametrize("layout", ["missing", "file", "no_contract_folders"])
def test_unreadable_batch_exits_2(tmp_path, layout):
    cfg = small_project(tmp_path / "project")
    batch = tmp_path / "landing" / "b-x"
    if layout == "file":
        batch.parent.mkdir(parents=True)
        batch.write_text("not a folder")
    elif layout == "no_contract_folders":
        (batch / "photos").mkdir(parents=True)
    result = validate_batch(batch, cfg)
    assert result.exit_code == 2 and not result.passed
    assert [f["check"] for f in json.loads(result.findings_path.read_text())] == ["readable"]


def test_cli_validate_exit_codes(validated, tmp_path):
    params = validated["cfg"].root / "params.yaml"
    runner = CliRunner()
    ok = runner.invoke(
        main,
        [
            "validate",
            str(validated["clean"].batch_dir),
            "--params",
            str(params),
            "--report-dir",
            str(tmp_path / "report"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.output and "Data Docs:" in ok.output
    assert (tmp_path / "report" / "findings.json").read_text().strip() == "[]"
    bad = runner.invoke(main, ["validate", str(tmp_path / "nowhere"), "--params", str(params)])
    assert bad.exit_code == 2 and "UNREADABLE" in bad.output


def test_every_batch_is_kept_in_the_drift_history(validated):
    from garmentseg.validation.drift import read_history

    reports = validated["cfg"].path("var/reports")
    history = {e["batch_id"]: e for e in read_history(reports)}
    assert {"b-clean", "b-broken"} <= set(history)
    assert history["b-broken"]["reference"] == "b-clean" and not history["b-broken"]["passed"]
    assert "garment_fraction/Front" in history["b-broken"]["stats"]
    page = validated["broken"].drift_page
    assert page == validated["broken"].data_docs_index.parent / "drift.html" and page.is_file()
    assert "drift over batches:" in validated["broken"].text()


def test_every_check_reaches_the_gallery_and_data_docs(validated):
    broken: ValidationResult = validated["broken"]
    gallery = broken.gallery.read_text()
    page = broken.data_docs_page.read_text()
    for finding in broken.findings:  # the gallery's table of all findings (cards: the first gallery_size)
        assert f"<td>{finding['file']}</td><td>{finding['check']}</td>" in gallery, finding
    for column in (
        "os_junk",
        "colour_mode_error",
        "border_opaque_share",
        "mask_touches",
        "edge_alignment",
        "same_shot_as",
        "near_duplicate_of",
    ):
        assert column in page, column
