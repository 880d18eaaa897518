"""Initial schema: users, tokens, admin audit, policies, enrolment, defenders, events, scans, settings.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
    )
    op.create_table(
        "mgmt_audits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False, index=True),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False, server_default=""),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("author", sa.String(128), nullable=False, server_default=""),
        sa.UniqueConstraint("kind", "revision", name="uq_policies_kind_revision"),
    )
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "seen_nonces",
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("seen_at", sa.Float, nullable=False, index=True),
    )
    op.create_table(
        "defenders",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("app_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("app_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("org", sa.String(256), nullable=False, server_default=""),
        sa.Column("space", sa.String(256), nullable=False, server_default=""),
        sa.Column("app_guid", sa.String(256), nullable=False, server_default=""),
        sa.Column("instance", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("hostname", sa.String(256), nullable=False, server_default=""),
        sa.Column("remote_addr", sa.String(64), nullable=False, server_default=""),
        sa.Column("kernel", sa.JSON, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("seq", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("defender_id", sa.String(256), nullable=False),
        sa.Column("app_id", sa.String(256), nullable=False),
        sa.Column("app_name", sa.String(256), nullable=False),
        sa.Column("org", sa.String(256), nullable=False),
        sa.Column("space", sa.String(256), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("effect", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("control", sa.String(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_time", "events", ["time"])
    op.create_index("ix_events_app_type_time", "events", ["app_name", "type", "time"])
    op.create_index("ix_events_defender", "events", ["defender_id"])
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(256), nullable=False, index=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("app_name", sa.String(256), nullable=False, server_default="", index=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "settings",
        "scans",
        "events",
        "defenders",
        "seen_nonces",
        "enrolment_tokens",
        "policies",
        "mgmt_audits",
        "api_tokens",
        "users",
    ):
        op.drop_table(name)
