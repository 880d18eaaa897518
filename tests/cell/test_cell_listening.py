"""Listening ports per container: read from the container's own network namespace, reported with its
workload, audited per the rule's listening-port control; under prevent nftables refuses new inbound
connections to a port the rule does not allow, whatever listens there."""

from __future__ import annotations

import itertools
import socket
from typing import Any

from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import START_SH

_subnets = itertools.count(80)


def _policy(effect: str, **listening: Any) -> RuntimePolicy:
    return RuntimePolicy.model_validate({"rules": [{"name": "listen-rule", "scope": {"orgs": ["acme"]},
                                                    "network": {"effect": effect, "listening": listening}}]})


def _reaches(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=3):
            return True
    except OSError:
        return False


def _started(garden: Any, defender: Any, policy: RuntimePolicy) -> tuple[Any, Any, str]:
    _d, audits = defender(policy)
    c = garden()
    _host_ip, cont_ip = c.veth(next(_subnets))
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)
    return c, audits, cont_ip


def test_listener_reported_and_alerted(garden: Any, defender: Any) -> None:
    c, audits, cont_ip = _started(garden, defender, _policy("alert", deny=["9000"]))
    c.run_app("exec /bin/nc -l -p 9000")
    c.run_app("exec /bin/nc -l -p 8080")
    ev = audits.wait(lambda e: e.type == "network" and e.control == "network.listening.deny")
    assert (ev.effect, ev.dest_port, ev.protocol, ev.app_name) == ("alert", 9000, "tcp", "shop")
    assert ev.extra["container"] == c.id and "listens on tcp" in ev.message
    d = audits.defender

    def listening() -> list[str]:
        return next(w.listening for w in d.workloads()[0].up if w.container_id == c.id)

    audits.wait(lambda _e: {"tcp/8080", "tcp/9000"} <= set(listening()))
    assert not any(e.control == "network.listening.deny" and e.dest_port == 8080 for e in audits.events)
    assert _reaches(cont_ip, 9000)  # alert: reported, not refused


def test_prevent_refuses_inbound_to_ports_not_allowed(garden: Any, defender: Any) -> None:
    c, audits, cont_ip = _started(garden, defender, _policy("prevent", allow=["8080"]))
    c.run_app("exec /bin/nc -l -p 9001")
    c.run_app("exec /bin/nc -l -p 8080")
    audits.wait(lambda e: e.control == "network.listening.allow" and e.dest_port == 9001 and "listens" in e.message)
    assert not _reaches(cont_ip, 9001)
    ev = audits.wait(lambda e: e.control == "network.listening.allow" and "inbound" in e.message)
    assert ev.effect == "prevent" and ev.dest_port == 9001 and "refused" in ev.message
    assert _reaches(cont_ip, 8080)
