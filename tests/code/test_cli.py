import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from garmentseg.cli import SUBCOMMANDS, main

HEAVY = ("tensorflow", "airflow", "great_expectations", "mlflow", "bentoml")


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_import_is_light_and_fast() -> None:
    code = (
        "import sys, time; t = time.process_time(); import garmentseg, garmentseg.cli, garmentseg.config; "
        f"print(time.process_time() - t); print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, heavy = out.strip().split("\n") + [""] * (2 - len(out.strip().split("\n")))
    assert heavy == "", f"importing garmentseg pulled in {heavy}"
    # CPU time, not wall time: a busy machine must not fail this, an import that does real work must.
    assert float(seconds) < 1.0, f"import took {seconds}s of CPU (wall {time.perf_counter() - started:.2f}s)"


def test_every_table_entry_resolves_to_the_command_of_that_name() -> None:
    with click.Context(main) as ctx:
        for name in SUBCOMMANDS:
            command = main.get_command(ctx, name)
            assert isinstance(command, click.Command) and command.name == name, name
        assert main.get_command(ctx, "nope") is None


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["train", "--profile", "demoo"], {}, "profile 'demoo' is not defined"),
        (
            ["ingest", "nowhere"],
            {"GARMENTSEG__TRAINING__EPOCHS": "abc"},
            "GARMENTSEG__TRAINING__EPOCHS from the",
        ),
        (["review", "list"], {"GARMENTSEG__NOT_A_SECTION": "1"}, "not_a_section"),
    ],
)
def test_a_configuration_problem_is_one_line_naming_it_in_every_command(args, env, said) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1 and said in result.output, result.output
    assert isinstance(result.exception, SystemExit), "a clean exit, not a traceback"


def test_serve_build_names_what_is_missing_in_one_line(tmp_path, monkeypatch) -> None:
    """No wheel to put in the Bento, then no model behind the URI: each one line, exit 1, nothing built."""
    import shutil
    from pathlib import Path

    params = tmp_path / "params.yaml"
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", params)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    build = ["serve", "--build", "--params", str(params), "--model-uri", "models:/garmentseg-unet@nosuch"]
    no_wheel = CliRunner().invoke(main, build)
    assert no_wheel.exit_code == 1 and "garmentseg-0.1.0-py3-none-any.whl missing" in no_wheel.output
    assert "Traceback" not in no_wheel.output
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "garmentseg-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    no_model = CliRunner().invoke(main, build)
    assert no_model.exit_code == 1, no_model.output
    assert "models:/garmentseg-unet@nosuch: no model to build with in registry" in no_model.output
