"""`garmentseg data ...` end to end on tiny data (no DVC)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.data.index import read_index

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


def test_synth_index_and_contact_sheet(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    args = ["data", "synth", "--params", PARAMS, "--out", str(data / "synth" / "demo"), "--garments", "2"]
    result = runner.invoke(main, [*args, "--seed", "4", "--workers", "1", "--width", "64", "--height", "96"])
    assert result.exit_code == 0, result.output
    assert "6 pairs from 2 garments" in result.output
    result = runner.invoke(main, ["data", "index", "--params", PARAMS, "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert len(read_index(data / "index.parquet")) == 6
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(
        main, ["data", "contact-sheet", str(data / "synth" / "demo"), "--out", str(sheet), "-n", "4"]
    )
    assert result.exit_code == 0, result.output
    assert sheet.read_bytes().startswith(b"\x89PNG")


def test_errors_exit_non_zero_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "not-a-uuid_Front.png").write_bytes(b"x")
    result = CliRunner().invoke(main, ["data", "add", str(tmp_path), "--params", PARAMS])
    assert result.exit_code == 1
    assert "not-a-uuid_Front.png" in result.output and "error:" in result.output


def test_indexing_a_contract_folder_as_a_data_dir_is_refused_not_an_empty_index(tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    args = ["data", "synth", "--params", PARAMS, "--out", str(batch), "--garments", "1"]
    assert (
        CliRunner().invoke(main, [*args, "--workers", "1", "--width", "64", "--height", "96"]).exit_code == 0
    )
    result = CliRunner().invoke(main, ["data", "index", "--params", PARAMS, "--data-dir", str(batch)])
    assert result.exit_code == 1 and "a batch in the data contract, not a data dir" in result.output
    assert not (batch / "index.parquet").exists()
