"""Learning: profiles, profile_items, profile_sources (an independent branch off the initial schema).

Revision ID: learning_0001
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "learning_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org", sa.String(256), nullable=False),
        sa.Column("space", sa.String(256), nullable=False),
        sa.Column("app", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("learning_since", sa.Float, nullable=False),
        sa.Column("last_new_at", sa.Float, nullable=True),
        sa.Column("last_report_at", sa.Float, nullable=True),
        sa.Column("window_hours", sa.Float, nullable=False),
        sa.Column("stable_hours", sa.Float, nullable=False),
        sa.Column("accepted_at", sa.Float, nullable=True),
        sa.Column("accepted_by", sa.String(128), nullable=False, server_default=""),
        sa.Column("accepted_revision", sa.Integer, nullable=True),
        sa.Column("addresses", sa.JSON, nullable=False),
        sa.Column("routes", sa.JSON, nullable=False),
        sa.UniqueConstraint("org", "space", "app", name="uq_profiles_app"),
    )
    op.create_table(
        "profile_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("profile_id", sa.Integer, sa.ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.UniqueConstraint("profile_id", "kind", "key", name="uq_profile_items_key"),
    )
    op.create_index("ix_profile_items_profile_kind", "profile_items", ["profile_id", "kind"])
    op.create_table(
        "profile_sources",
        sa.Column(
            "item_id", sa.Integer, sa.ForeignKey("profile_items.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("source", sa.String(330), primary_key=True),
        sa.Column("instance", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("profile_sources")
    op.drop_index("ix_profile_items_profile_kind", table_name="profile_items")
    op.drop_table("profile_items")
    op.drop_table("profiles")
