"""Table definitions (SQLAlchemy Core). Migrations in `migrations/versions/` create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
)

mgmt_audits = Table(
    "mgmt_audits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False, index=True),
    Column("username", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("author", String(128), nullable=False, server_default=""),
    UniqueConstraint("kind", "revision", name="uq_policies_kind_revision"),
)

enrolment_tokens = Table(
    "enrolment_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False, server_default=""),
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("scope", JSON, nullable=True),  # {org, space, app, app_guid}: what the bundle may enrol
)

seen_nonces = Table(
    "seen_nonces",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("seen_at", Float, nullable=False, index=True),
)

defenders = Table(
    "defenders",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("app_id", String(256), nullable=False, server_default=""),
    Column("app_name", String(256), nullable=False, server_default=""),
    Column("org", String(256), nullable=False, server_default=""),
    Column("space", String(256), nullable=False, server_default=""),
    Column("app_guid", String(256), nullable=False, server_default=""),
    Column("instance", Integer, nullable=False, server_default="0"),
    Column("version", String(64), nullable=False, server_default=""),
    Column("hostname", String(256), nullable=False, server_default=""),
    Column("remote_addr", String(64), nullable=False, server_default=""),
    Column("kernel", JSON, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("connected", Boolean, nullable=False, server_default=false()),
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("enrolled_at", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
    Column("key_fingerprint", String(64), nullable=False, server_default=""),
    Column("token_id", Integer, nullable=True),
    # which console replica holds the connection (migration cluster_0001); its lease decides staleness
    Column("replica_id", String(64), nullable=True, index=True),
    Column("defender_type", String(16), nullable=False, server_default="app-embedded"),
)

# The app containers each cell defender protects: one workload per container (issue 15).
cell_workloads = Table(
    "cell_workloads",
    metadata,
    Column("defender_id", String(256), primary_key=True),
    Column("container_id", String(256), primary_key=True),
    Column("app_id", String(256), nullable=False, server_default=""),
    Column("app_name", String(256), nullable=False, server_default=""),
    Column("org", String(256), nullable=False, server_default=""),
    Column("space", String(256), nullable=False, server_default=""),
    Column("app_guid", String(256), nullable=False, server_default=""),
    Column("instance", Integer, nullable=False, server_default="0"),
    Column("rule", String(256), nullable=False, server_default=""),
    Column("protections", JSON, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("seen_at", Float, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("gone_at", Float, nullable=True),
    Column("listening", JSON, nullable=True),  # ["tcp/8080", ...]
    Index("ix_cell_workloads_app", "app_name"),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("time", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("defender_id", String(256), nullable=False),
    Column("app_id", String(256), nullable=False),
    Column("app_name", String(256), nullable=False),
    Column("org", String(256), nullable=False),
    Column("space", String(256), nullable=False),
    Column("type", String(32), nullable=False),
    Column("effect", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("rule", String(256), nullable=False),
    Column("control", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("body", JSON, nullable=False),
    UniqueConstraint("defender_id", "event_id", name="uq_events_defender_event"),
    Index("ix_events_time", "time"),
    Index("ix_events_app_type_time", "app_name", "type", "time"),
)

scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(256), nullable=False, index=True),
    Column("verdict", String(32), nullable=False),
    Column("app_name", String(256), nullable=False, server_default="", index=True),
    Column("created_at", Float, nullable=False),
    Column("summary", JSON, nullable=False),
    Column("body", JSON, nullable=False),
    # what will run (migration 0002): the CF app the droplet was staged for, where the report came from
    Column("app_guid", String(64), nullable=False, server_default="", index=True),
    Column("org", String(256), nullable=False, server_default=""),
    Column("space", String(256), nullable=False, server_default=""),
    Column("source", String(16), nullable=False, server_default=""),
    Column("blob", String(1024), nullable=False, server_default=""),
    Column("db_revision", String(64), nullable=False, server_default=""),
    Column("db_updated_at", Float, nullable=True),
    Index("ix_scans_digest_app_guid", "digest", "app_guid"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)

# Cells (hosts) and their own security: posture per host, report history, host events.
hosts = Table(
    "hosts",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("posture", JSON, nullable=False),
)

host_reports = Table(
    "host_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(256), ForeignKey("hosts.name", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("time", Float, nullable=False),
    Column("summary", JSON, nullable=False),
    Column("body", JSON, nullable=False),
    Index("ix_host_reports_host_kind_time", "host", "kind", "time"),
)

host_events = Table(
    "host_events",
    metadata,
    Column("host", String(256), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("time", Float, nullable=False),
    Column("type", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("user", String(256), nullable=True),
    Column("path", Text, nullable=True),
    Column("message", Text, nullable=False),
    Column("body", JSON, nullable=False),
    Index("ix_host_events_host_time", "host", "time"),
)

# Several console replicas on one database (migration cluster_0001).
cluster_versions = Table(
    "cluster_versions",
    metadata,
    Column("topic", String(32), primary_key=True),
    Column("version", BigInteger, nullable=False, server_default="0"),
)
"""one version number per kind of shared change; bumped in the transaction that makes the change"""

console_replicas = Table(
    "console_replicas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(256), nullable=False, server_default=""),
    Column("pid", Integer, nullable=False, server_default="0"),
    Column("url", String(512), nullable=False, server_default=""),
    Column("ws_address", String(512), nullable=False, server_default=""),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)
"""live replicas and their leases (heartbeat_at is the database's clock)"""

cluster_commands = Table(
    "cluster_commands",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("defender_id", String(256), nullable=False),
    Column("replica_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("args", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("ok", Boolean, nullable=True),
    Column("data", JSON, nullable=True),
    Column("error", Text, nullable=False, server_default=""),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)
"""defender commands asked on one replica for a defender connected to another"""

# Learning (migration learning_0001): one profile per app (org/space/app across instances and
# restarts); what it was seen doing, item by item; per item, the cumulative count each defender run
# reported (so re-sent reports are idempotent and counts add up across instances).
profiles = Table(
    "profiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org", String(256), nullable=False),
    Column("space", String(256), nullable=False),
    Column("app", String(256), nullable=False),
    Column("state", String(16), nullable=False),  # learning | accepted | enforcing
    Column("created_at", Float, nullable=False),
    Column("learning_since", Float, nullable=False),
    Column("last_new_at", Float, nullable=True),
    Column("last_report_at", Float, nullable=True),
    Column("window_hours", Float, nullable=False),
    Column("stable_hours", Float, nullable=False),
    Column("accepted_at", Float, nullable=True),
    Column("accepted_by", String(128), nullable=False, server_default=""),
    Column("accepted_revision", Integer, nullable=True),
    Column("addresses", JSON, nullable=False),  # the instances' own IPs, newest report per run
    Column("routes", JSON, nullable=False),
    Column("dropped", BigInteger, nullable=False, server_default="0"),  # learning_0002
    Column("auto_accept", String(16), nullable=False, server_default="off"),  # learning_0003: off|window|stable
    UniqueConstraint("org", "space", "app", name="uq_profiles_app"),
)

profile_items = Table(
    "profile_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("profile_id", Integer, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # process | destination | dns | listen
    Column("key", String(64), nullable=False),
    Column("facts", JSON, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("instances", Integer, nullable=False),
    UniqueConstraint("profile_id", "kind", "key", name="uq_profile_items_key"),
    Index("ix_profile_items_profile_kind", "profile_id", "kind"),
)

profile_sources = Table(
    "profile_sources",
    metadata,
    Column("item_id", Integer, ForeignKey("profile_items.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String(330), primary_key=True),  # defender id + "/" + run id
    Column("instance", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("last_seen", Float, nullable=False),
)

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),  # "user:<folded name>" or "addr:<address or /64>"
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("wait_until", Float, nullable=False, server_default="0"),
    Column("locked_until", Float, nullable=False, server_default="0"),
    Column("last_failure", Float, nullable=False, server_default="0", index=True),
)
