"""Cell defenders: `defenders.defender_type` and the containers (workloads) each cell reports.

Revision ID: cell_0001
Revises: 0003_defender_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cell_0001"
down_revision = "0003_defender_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("defenders") as b:
        b.add_column(sa.Column("defender_type", sa.String(16), nullable=False, server_default="app-embedded"))
    op.create_table(
        "cell_workloads",
        sa.Column("defender_id", sa.String(256), primary_key=True),
        sa.Column("container_id", sa.String(256), primary_key=True),
        sa.Column("app_id", sa.String(256), nullable=False, server_default=""),
        sa.Column("app_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("org", sa.String(256), nullable=False, server_default=""),
        sa.Column("space", sa.String(256), nullable=False, server_default=""),
        sa.Column("app_guid", sa.String(256), nullable=False, server_default=""),
        sa.Column("instance", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rule", sa.String(256), nullable=False, server_default=""),
        sa.Column("protections", sa.JSON, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("gone_at", sa.Float, nullable=True),
    )
    op.create_index("ix_cell_workloads_app", "cell_workloads", ["app_name"])


def downgrade() -> None:
    op.drop_index("ix_cell_workloads_app", "cell_workloads")
    op.drop_table("cell_workloads")
    with op.batch_alter_table("defenders") as b:
        b.drop_column("defender_type")
