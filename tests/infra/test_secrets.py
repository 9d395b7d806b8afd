"""Committed secrets, found by detect-secrets (Yelp's maintained scanner, default plugins and filters).

Its findings that are not secrets (a Secret's *name* under a key the scanner reads as a password) are kept in
`.secrets.baseline` with `is_secret: false`, the scanner's own audit format; anything else fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.infra_files import (
    BASELINE,
    COMPOSE,
    ROOT,
    audited_false_positives,
    repository_files,
    secret_findings,
)

PLANTED = {
    "conf.yaml": "db_password: hunter2hunter2",
    "settings.py": 'password = "hunter2hunter2"',
    "app.env": "url=postgresql://app:s3cr3tpw@db:5432/app",
    "notes.md": "key " + "AKIA" + "ABCDEFGHIJKLMNOP",
    "id_rsa": "-----BEGIN " + "RSA PRIVATE KEY-----",
    "x.env": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENG",
}
REFERENCES = {
    "compose.yaml": "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?}",
    "params.yaml": "auth_token_env: GARMENTSEG_API_TOKEN",
    "README.md": 'url="postgresql://airflow:$AIRFLOW_DB_PASSWORD@127.0.0.1:5432/airflow"',
    "auth.py": 'token = os.environ.get("GARMENTSEG_API_TOKEN")',
    "init.sh": 'create_role airflow "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is required}"',
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_the_scanner_flags_a_planted_secret(tmp_path: Path, name: str) -> None:
    planted = tmp_path / name
    planted.write_text(PLANTED[name] + "\n")
    assert secret_findings(planted), f"not flagged: {name}: {PLANTED[name]}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_the_scanner_passes_a_reference_to_a_secret(tmp_path: Path, name: str) -> None:
    reference = tmp_path / name
    reference.write_text(REFERENCES[name] + "\n")
    assert not secret_findings(reference), f"flagged: {name}: {REFERENCES[name]}"


def test_nothing_secret_is_committed() -> None:
    files = [f for f in repository_files() if f != BASELINE]  # hashes of audited findings, not secrets
    assert ROOT / "pyproject.toml" in files and COMPOSE in files
    assert not [f for f in files if f.name == ".env"], "an .env file is tracked or not ignored"
    audited = audited_false_positives()
    unexpected = [
        f"{name}:{line}: {kind}"
        for name, kind, hashed, line in secret_findings(*files)
        if (name, hashed) not in audited
    ]
    assert not unexpected, "secret-looking content (audit it into .secrets.baseline if it is not one):\n" + (
        "\n".join(unexpected)
    )
