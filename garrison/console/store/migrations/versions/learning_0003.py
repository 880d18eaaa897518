"""Learning: profiles.auto_accept (off | window | stable: accept the proposal in alert mode by itself).

Revision ID: learning_0003
Revises: learning_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "learning_0003"
down_revision = "learning_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiles") as b:
        b.add_column(sa.Column("auto_accept", sa.String(16), nullable=False, server_default="off"))


def downgrade() -> None:
    with op.batch_alter_table("profiles") as b:
        b.drop_column("auto_accept")
