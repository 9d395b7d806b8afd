"""Every cutout the platform makes for a new shot, with its estimate: the queue holds only the doubtful
ones, this log holds them all, so the share flagged and the estimates can be followed per model version."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cutout_log"
down_revision = "queue_table"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cutouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shot_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("estimate", sa.Float, nullable=False),
        sa.Column("needs_review", sa.Boolean, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False, index=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cutouts")
