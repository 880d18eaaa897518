"""The defender's learning recorder: identities, argv shapes, bounds, cumulative reports that heal."""

from __future__ import annotations

import os
import shutil

from garrison.channel import protocol as p
from garrison.defender import profile as prof
from garrison.defender.profile import ProfileRecorder, ProfileReporter, app_routes, argv_shape

ALL = frozenset({"processes", "network", "listening", "dns"})


def test_argv_shape_hides_what_varies() -> None:
    assert argv_shape(["python", "app.py", "--port", "8080", "--id=0b5e6f1e-8a6c-4c0f-9d1e-2f3a4b5c6d7e"]) == [
        "app.py", "--port", "<n>", "--id=<hex>",
    ]  # fmt: skip
    assert argv_shape(["sh", "/tmp/tmpabc123/run.sh", "x" * 200]) == ["<tmp>", "<long>"]
    assert len(argv_shape(["x", *map(str, range(100))])) == 16


def test_only_learning_controls_are_recorded_and_symlinks_resolve() -> None:
    r = ProfileRecorder(names_for=lambda ip: ["db.internal"] if ip == "10.0.0.5" else [])
    r.observe("dns", {"name": "a.example"})
    assert r.take(full=True)[0][0].dns == []  # nothing learns yet
    r.set_controls(frozenset({"network", "dns"}))
    true = shutil.which("true") or "/bin/true"
    r.observe("exec", {"exe": true, "argv": ["true"], "ppid": os.getpid()})  # processes not learning
    for _ in range(3):
        r.observe("net", {"dest_ip": "10.0.0.5", "dest_port": 5432, "protocol": "tcp"})
    r.observe("dns", {"name": "A.Example."})
    (rep,), _ = r.take()
    assert rep.processes == []
    (dest,) = rep.destinations
    assert (dest.ip, dest.port, dest.protocol, dest.count, dest.names) == (
        "10.0.0.5",
        5432,
        "tcp",
        3,
        ["db.internal"],
    )
    assert [n.name for n in rep.dns] == ["a.example"]
    r.set_controls(ALL)
    r.observe("exec", {"exe": true, "argv": ["true", "1"], "ppid": os.getpid()})
    r.observe("exec", {"exe": "/nonexistent/usr/local/bin/true", "argv": ["true"]})  # a PATH miss
    (rep,), _ = r.take()
    (proc,) = rep.processes
    assert proc.exe == os.path.realpath(true) and proc.argv_shape == ["<n>"] and len(proc.sha256) == 64
    assert proc.parent == os.path.realpath(f"/proc/{os.getpid()}/exe")


def test_bounds_and_chunks(monkeypatch) -> None:
    monkeypatch.setattr(prof, "MAX_ITEMS_PER_KIND", 1500)
    r = ProfileRecorder()
    r.set_controls(ALL)
    for i in range(1600):
        r.observe("dns", {"name": f"n{i}.example"})
    reports, _ = r.take(full=True)
    assert [len(x.dns) for x in reports] == [p.MAX_PROFILE_ITEMS, 500]
    assert all(x.dropped == 100 for x in reports)
    for x in reports:  # each one a valid wire message within the console's limits
        assert p.parse(p.dump(x)) == x


def test_reporter_resends_after_a_failed_send_and_counts_stay_cumulative() -> None:
    r = ProfileRecorder()
    r.set_controls(ALL)
    sent: list[p.ProfileReport] = []
    up = {"ok": False}

    def send(msg: p.ProfileReport) -> bool:
        if up["ok"]:
            sent.append(msg)
        return up["ok"]

    rep = ProfileReporter(r, send, addresses=["10.1.0.2"], routes=["x.apps.internal"], connects=lambda: 1)
    r.observe("listen", {"port": 8080, "protocol": "tcp"})
    rep.flush()  # no connection: kept
    up["ok"] = True
    rep.flush()
    assert [x.listening[0].count for x in sent] == [1] and sent[0].addresses == ["10.1.0.2"]
    rep.flush()  # nothing new: nothing sent
    assert len(sent) == 1
    r.observe("listen", {"port": 8080, "protocol": "tcp"})
    rep.flush()
    assert sent[-1].listening[0].count == 2  # cumulative: a re-sent report changes nothing at the console
    assert sent[-1].run_id == sent[0].run_id


def test_routes_from_vcap_application() -> None:
    env = {"VCAP_APPLICATION": '{"application_uris": ["shop.example.com/api", "shop.apps.internal"]}'}
    assert app_routes(env) == ["shop.example.com", "shop.apps.internal"]
    assert app_routes({"VCAP_APPLICATION": "[1]"}) == [] and app_routes({"VCAP_APPLICATION": "{"}) == []


def test_counts_seen_before_learning_ended_are_still_reported() -> None:
    r = ProfileRecorder()
    r.set_controls(ALL)
    sent: list[p.ProfileReport] = []
    rep = ProfileReporter(r, lambda m: sent.append(m) or True, connects=lambda: 1)
    rep.flush()
    r.observe("dns", {"name": "late.example"})
    r.set_controls(frozenset())  # the rule was accepted: learning ends
    r.observe("dns", {"name": "after.example"})  # not learning any more: not recorded
    rep.flush()
    assert [n.name for n in sent[-1].dns] == ["late.example"]
    rep.flush()
    assert len(sent) == 2
