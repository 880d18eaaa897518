"""Console replicas on one database: leases, per-topic change versions, routed defender commands.

- console_replicas: one row per running replica, its heartbeat (lease) on the database clock.
- defenders.replica_id: the replica holding the defender's connection; when its lease expires the
  others mark the defender disconnected.
- cluster_versions: a version per topic (policy, settings, auth, defenders, commands), bumped in the
  transaction that makes the change; PostgreSQL NOTIFY only wakes the replicas, which then compare
  versions, so a notification missed while a listener reconnects is caught up.
- cluster_commands: a command (e.g. upload_forensics) asked on one replica for a defender connected to
  another; the holder runs it and stores the answer.

Revision ID: cluster_0001
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cluster_0001"
down_revision = "0001"
branch_labels = None
depends_on = None

TOPICS = ("policy", "settings", "auth", "defenders", "commands")


def upgrade() -> None:
    with op.batch_alter_table("defenders") as b:
        b.add_column(sa.Column("replica_id", sa.String(64), nullable=True))
    op.create_index("ix_defenders_replica_id", "defenders", ["replica_id"])
    versions = op.create_table(
        "cluster_versions",
        sa.Column("topic", sa.String(32), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.bulk_insert(versions, [{"topic": t, "version": 0} for t in TOPICS])
    op.create_table(
        "console_replicas",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(256), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
        sa.Column("url", sa.String(512), nullable=False, server_default=""),
        sa.Column("ws_address", sa.String(512), nullable=False, server_default=""),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cluster_commands",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("defender_id", sa.String(256), nullable=False),
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_cluster_commands_replica_id", "cluster_commands", ["replica_id"])


def downgrade() -> None:
    op.drop_table("cluster_commands")
    op.drop_table("console_replicas")
    op.drop_table("cluster_versions")
    op.drop_index("ix_defenders_replica_id", "defenders")
    with op.batch_alter_table("defenders") as b:
        b.drop_column("replica_id")
