"""Learning: profiles.dropped (items refused once a profile holds its bound of one kind).

Revision ID: learning_0002
Revises: learning_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "learning_0002"
down_revision = "learning_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("profiles") as b:
        b.add_column(sa.Column("dropped", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("profiles") as b:
        b.drop_column("dropped")
