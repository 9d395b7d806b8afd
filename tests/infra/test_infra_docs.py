"""infra/ lint and docs: yamllint, and the README documents the mode switches. Static: no engine, cluster or Docker here."""

from __future__ import annotations

import subprocess
import sys

from tests.infra.infra_files import INFRA, MODE_VARIABLES, README


def test_yamllint_passes_on_infra() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(INFRA / ".yamllint"), str(INFRA)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_the_mode_switches_with_a_diagram() -> None:
    text = README.read_text()
    assert "```mermaid" in text
    table = [line for line in text.splitlines() if line.startswith("| `")]
    for variable in MODE_VARIABLES:
        assert any(f"`{variable}`" in row for row in table), f"{variable} is not in the README's table"
    for command in (
        "airflow scheduler",
        "airflow dag-processor",
        "airflow api-server",
        "airflow celery worker",
    ):
        assert f"uv run {command}" in text
    assert "uv run mlflow server --backend-store-uri postgresql://" in text
