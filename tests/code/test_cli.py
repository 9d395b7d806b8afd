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
