"""`Store`: the engine plus one repository per kind of record, opened and migrated in one call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from garrison.console.store import migrate
from garrison.console.store.cluster import ClusterStore
from garrison.console.store.db import make_engine, normalise_url
from garrison.console.store.defenders import DefenderStore
from garrison.console.store.events import EventStore
from garrison.console.store.hosts import HostStore
from garrison.console.store.mgmt_audit import MgmtAuditStore
from garrison.console.store.policies import PolicyStore
from garrison.console.store.profiles import ProfileStore
from garrison.console.store.scans import ScanStore
from garrison.console.store.settings import SettingsStore
from garrison.console.store.throttle import ThrottleStore
from garrison.console.store.users import UserStore
from garrison.console.store.workloads import WorkloadStore


@dataclass
class Store:
    engine: Engine
    users: UserStore
    mgmt: MgmtAuditStore
    policies: PolicyStore
    defenders: DefenderStore
    events: EventStore
    scans: ScanStore
    settings: SettingsStore
    hosts: HostStore
    cluster: ClusterStore
    workloads: WorkloadStore
    profiles: ProfileStore
    throttle: ThrottleStore

    @classmethod
    def open(cls, url: str | None, data_dir: Path) -> Store:
        engine = make_engine(normalise_url(url, data_dir))
        migrate.upgrade(engine)
        return cls(
            engine=engine,
            users=UserStore(engine),
            mgmt=MgmtAuditStore(engine),
            policies=PolicyStore(engine),
            defenders=DefenderStore(engine),
            events=EventStore(engine),
            scans=ScanStore(engine),
            settings=SettingsStore(engine),
            hosts=HostStore(engine),
            cluster=ClusterStore(engine),
            workloads=WorkloadStore(engine),
            profiles=ProfileStore(engine),
            throttle=ThrottleStore(engine),
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
