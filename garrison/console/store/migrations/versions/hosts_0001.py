"""Cells' own security: hosts, host_reports, host_events (an independent branch off the initial schema).

Revision ID: hosts_0001
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hosts_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("posture", sa.JSON, nullable=False),
    )
    op.create_table(
        "host_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(256), sa.ForeignKey("hosts.name", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_host_reports_host_kind_time", "host_reports", ["host", "kind", "time"])
    op.create_table(
        "host_events",
        sa.Column("host", sa.String(256), sa.ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("user", sa.String(256), nullable=True),
        sa.Column("path", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_host_events_host_time", "host_events", ["host", "time"])


def downgrade() -> None:
    op.drop_table("host_events")
    op.drop_table("host_reports")
    op.drop_table("hosts")
