"""The machine's PostgreSQL (127.0.0.1:5432, trust auth) for production-mode tests: a fresh database each."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST = os.environ.get("GARMENTSEG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("GARMENTSEG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("GARMENTSEG_TEST_PG_USER", "postgres")


def _admin():
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"PRODUCTION-MODE TEST SKIPPED: PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc})"
        )
    conn.autocommit = True
    return conn


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """Create a throwaway database, yield its SQLAlchemy URI, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()
