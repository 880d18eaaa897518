"""Defender identity bound to its key and scoped bundles; events de-duplicated per defender.

- events: the unique key is (defender_id, event_id), not event_id alone: a defender that sends
  another defender's event id first can no longer make the genuine event be dropped (issue 10 #2).
- defenders: `key_fingerprint` (SHA-256 of the public key the id was issued to: an id is never
  issued to another key) and `token_id` (the install bundle that enrolled it).
- enrolment_tokens: `scope` (org / space / app / app_guid the bundle may enrol, null = any).

Revision ID: 0003_defender_identity
Revises: 0002_scan_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_defender_identity"
down_revision = "0002_scan_identity"
branch_labels = None
depends_on = None

# SQLite reflects the inline UNIQUE of 0001 without a name; this convention gives it one to drop.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("events", recreate="always", naming_convention=_NAMING) as b:
            b.drop_constraint("uq_events_event_id", type_="unique")
            b.create_unique_constraint("uq_events_defender_event", ["defender_id", "event_id"])
    else:
        op.drop_constraint("events_event_id_key", "events", type_="unique")
        op.create_unique_constraint("uq_events_defender_event", "events", ["defender_id", "event_id"])
    with op.batch_alter_table("defenders") as b:
        b.add_column(sa.Column("key_fingerprint", sa.String(64), nullable=False, server_default=""))
        b.add_column(sa.Column("token_id", sa.Integer, nullable=True))
    with op.batch_alter_table("enrolment_tokens") as b:
        b.add_column(sa.Column("scope", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrolment_tokens") as b:
        b.drop_column("scope")
    with op.batch_alter_table("defenders") as b:
        b.drop_column("token_id")
        b.drop_column("key_fingerprint")
    with op.batch_alter_table("events") as b:
        b.drop_constraint("uq_events_defender_event", type_="unique")
        b.create_unique_constraint("events_event_id_key", ["event_id"])
