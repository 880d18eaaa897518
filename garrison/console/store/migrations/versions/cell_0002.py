"""Cell workloads: the listening sockets each container has (`cell_workloads.listening`).

Revision ID: cell_0002
Revises: cell_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cell_0002"
down_revision = "cell_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cell_workloads") as b:
        b.add_column(sa.Column("listening", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cell_workloads") as b:
        b.drop_column("listening")
