"""Drop events.ix_events_defender: the unique key (defender_id, event_id) already serves every
look-up by defender, and each index is one more B-tree insert per ingested event (~20% of SQLite's
insert cost at 1,000 defenders).

Revision ID: 0004_events_defender_index
Revises: 0003_defender_identity
"""

from __future__ import annotations

from alembic import op

revision = "0004_events_defender_index"
down_revision = "0003_defender_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_defender", table_name="events", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_events_defender", "events", ["defender_id"])
