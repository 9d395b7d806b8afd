"""Alembic's entry point for the review queue's schema; run only through garmentseg.review.store.migrate."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="review_alembic_version")
with context.begin_transaction():
    context.run_migrations()
