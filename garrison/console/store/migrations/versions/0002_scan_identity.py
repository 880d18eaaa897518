"""Scans keyed to what will run: the CF app (guid, org, space), where the report came from, the blob
path, and which vulnerability-DB revision the verdict used.

Revision ID: 0002_scan_identity
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_scan_identity"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scans") as b:
        b.add_column(sa.Column("app_guid", sa.String(64), nullable=False, server_default=""))
        b.add_column(sa.Column("org", sa.String(256), nullable=False, server_default=""))
        b.add_column(sa.Column("space", sa.String(256), nullable=False, server_default=""))
        b.add_column(sa.Column("source", sa.String(16), nullable=False, server_default=""))
        b.add_column(sa.Column("blob", sa.String(1024), nullable=False, server_default=""))
        b.add_column(sa.Column("db_revision", sa.String(64), nullable=False, server_default=""))
        b.add_column(sa.Column("db_updated_at", sa.Float, nullable=True))
        b.create_index("ix_scans_digest_app_guid", ["digest", "app_guid"])
        b.create_index("ix_scans_app_guid", ["app_guid"])


def downgrade() -> None:
    with op.batch_alter_table("scans") as b:
        b.drop_index("ix_scans_app_guid")
        b.drop_index("ix_scans_digest_app_guid")
        for col in ("db_updated_at", "db_revision", "blob", "source", "space", "org", "app_guid"):
            b.drop_column(col)
