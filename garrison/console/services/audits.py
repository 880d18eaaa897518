"""Runtime audit queries, CSV export and incidents (related alert/prevent audits grouped)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from typing import Any

from garrison.console.store.events import EventFilter
from garrison.console.store.open import Store
from garrison.policy.audit import SEVERITY_ORDER

CSV_COLUMNS = [
    "id", "time", "defender_id", "app_id", "app_name", "org", "space", "instance", "type", "effect",
    "severity", "rule", "control", "pid", "exe", "argv", "dest_ip", "dest_port", "dest_name", "message",
]  # fmt: skip
CSV_MAX_ROWS = 1_000_000
INCIDENT_GAP_S = 600.0
INCIDENT_SCAN_LIMIT = 50_000
INCIDENT_AUDITS = 500
_INCIDENT_EFFECTS = ("alert", "prevent", "ban")


def iso_time(t: float) -> str:
    """UNIX seconds as ISO 8601 UTC with milliseconds (what spreadsheets and SIEMs parse)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _csv_cell(value: Any) -> str:
    text = " ".join(value) if isinstance(value, list) else "" if value is None else str(value)
    # Spreadsheet formula injection: a cell starting with = + - @ would be evaluated by Excel & co.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _incident_key(ev: dict[str, Any]) -> tuple[str, str, str, str]:
    return (ev.get("org") or "", ev.get("space") or "", ev.get("app_name") or "", ev.get("type") or "")


class AuditService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def query(self, flt: EventFilter, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        return self.store.events.query(flt, limit=limit, offset=offset), self.store.events.count(flt)

    def csv_lines(self, flt: EventFilter) -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for ev in self.store.events.stream(flt, limit=CSV_MAX_ROWS):
            row = [_csv_cell(ev.get(col)) for col in CSV_COLUMNS]
            row[1] = iso_time(float(ev["time"]))  # CSV_COLUMNS[1] == "time"
            writer.writerow(row)
            if buf.tell() > 64 * 1024:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    def incidents(self, flt: EventFilter, limit: int, offset: int) -> list[dict[str, Any]]:
        """An incident = alert/prevent/ban audits of one app (org/space/app: two apps of one name in
        different spaces are different apps) and one audit type where each audit follows the
        previous one within INCIDENT_GAP_S. Computed over the newest INCIDENT_SCAN_LIMIT audits
        matching the filter; newest incident first."""
        events = self.store.events.query(flt, limit=INCIDENT_SCAN_LIMIT, offset=0)
        open_: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        done: list[dict[str, Any]] = []
        for ev in reversed(events):  # oldest first
            if ev.get("effect") not in _INCIDENT_EFFECTS:
                continue
            key = _incident_key(ev)
            inc = open_.get(key)
            if inc is not None and ev["time"] - inc["end"] > INCIDENT_GAP_S:
                done.append(inc)
                inc = None
            if inc is None:
                inc = open_[key] = {
                    "id": hashlib.sha256("\0".join((*key, ev["id"])).encode()).hexdigest()[:24],
                    "org": key[0],
                    "space": key[1],
                    "app_name": key[2],
                    "type": key[3],
                    "start": ev["time"],
                    "end": ev["time"],
                    "count": 0,
                    "effects": {},
                    "severity": ev.get("severity", "low"),
                    "rules": [],
                    "defenders": [],
                    "event_ids": [],
                    "first_message": ev.get("message", ""),
                }
            inc["end"] = ev["time"]
            inc["count"] += 1
            inc["effects"][ev["effect"]] = inc["effects"].get(ev["effect"], 0) + 1
            sev = ev.get("severity", "low")
            if SEVERITY_ORDER.get(sev, 0) > SEVERITY_ORDER.get(inc["severity"], 0):
                inc["severity"] = sev
            for field, value in (("rules", ev.get("rule", "")), ("defenders", ev.get("defender_id", ""))):
                if value and value not in inc[field] and len(inc[field]) < 50:
                    inc[field].append(value)
            if len(inc["event_ids"]) < 20:
                inc["event_ids"].append(ev["id"])
        done.extend(open_.values())
        done.sort(key=lambda i: i["end"], reverse=True)
        return done[offset : offset + limit]

    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """One incident with its audits (newest first, at most INCIDENT_AUDITS): the alert/prevent/ban
        audits of its app and type between its first and last one — incidents of one app and type never
        overlap in time, so these are exactly its own. None when no incident has that id."""
        every = self.incidents(EventFilter(), 10**9, 0)
        found = next((i for i in every if i["id"] == incident_id), None)
        if found is None:
            return None
        span = EventFilter(
            app=found["app_name"], type=found["type"], since=found["start"], until=found["end"]
        )
        rows = self.store.events.query(span, limit=INCIDENT_SCAN_LIMIT, offset=0)
        key = (found["org"], found["space"], found["app_name"], found["type"])
        mine = [e for e in rows if e.get("effect") in _INCIDENT_EFFECTS and _incident_key(e) == key]
        found["audits"] = mine[:INCIDENT_AUDITS]
        return found
