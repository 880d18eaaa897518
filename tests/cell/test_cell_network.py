"""Outbound rules of the cell defender: nftables in each container's network namespace, decisions read
back through NFLOG as audits. The container reaches the cell over a veth pair (the suite's own
10.200.n.0/30); listeners on the cell side tell a refused connect from a closed port."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from garrison.cell.network import ruleset
from garrison.policy.model import NetworkControls, RuntimePolicy
from tests.cell.conftest import START_SH
from tests.defender.net.servers import TcpServer

_subnets = itertools.count(10)


@pytest.fixture
def wired(garden: Any, defender: Any) -> Iterator[Any]:
    listeners: list[TcpServer] = []

    def make() -> tuple[Any, Any, str, TcpServer, TcpServer]:
        """A started app container wired to the cell, two listeners, a defender with no network rule yet
        (the rules name the listeners' ports, known only once they listen)."""
        _d, audits = defender(RuntimePolicy.model_validate({"rules": [{"name": "net-rule"}]}))
        c = garden()
        host_ip, _cont_ip = c.veth(next(_subnets))
        ok, bad = TcpServer(host_ip), TcpServer(host_ip)
        listeners.extend((ok, bad))
        return c, audits, host_ip, ok, bad

    yield make
    for lst in listeners:
        lst.close()


def _connect(c: Any, ip: str, port: int) -> bool:
    """busybox nc from inside the container: True when the TCP connect succeeded."""
    r = c.exec("/bin/sh", "-c", f"echo x | /bin/nc -w 3 {ip} {port}; echo rc=$?")
    return "rc=0" in r.stdout


def _start(c: Any, audits: Any) -> None:
    c.run_app(START_SH)
    audits.wait(lambda e: e.control == "cell.container_protected" and e.extra["container"] == c.id)


def test_denied_destination_refused_allowed_one_reaches(wired: Any) -> None:
    c, audits, host_ip, ok, bad = wired()
    policy = RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "prevent", "outbound": {"deny": [f"{host_ip}:{bad.port}"]}}}]})
    _start(c, audits)
    _set_policy(audits, policy)
    assert _connect(c, host_ip, ok.port) and ok.accepted == 1
    assert not _connect(c, host_ip, bad.port) and bad.accepted == 0
    ev = audits.wait(lambda e: e.type == "network" and e.dest_port == bad.port)
    assert (ev.effect, ev.control, ev.dest_ip, ev.protocol) == ("prevent", "network.outbound.deny", host_ip, "tcp")
    assert ev.app_name == "shop" and "refused" in ev.message


def _set_policy(audits: Any, policy: RuntimePolicy) -> None:
    audits.defender.set_policy(policy)  # synchronous: the nftables table is in place on return


def test_allow_list_alert_and_bad_reputation(wired: Any) -> None:
    c, audits, host_ip, ok, bad = wired()
    _start(c, audits)
    _set_policy(audits, RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "prevent", "outbound": {"allow": [f"{host_ip}:{ok.port}"]}}}]}))
    assert _connect(c, host_ip, ok.port)
    assert not _connect(c, host_ip, bad.port)
    audits.wait(lambda e: e.control == "network.outbound.allow" and e.dest_port == bad.port)
    _set_policy(audits, RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "alert", "outbound": {"deny": [f"{host_ip}:{bad.port}"]}}}]}))
    assert _connect(c, host_ip, bad.port) and bad.accepted == 1
    audits.wait(lambda e: e.effect == "alert" and e.dest_port == bad.port)
    _set_policy(audits, RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "prevent", "bad_reputation_ips": [f"{host_ip}/32", "2001:db8::/32"]}}]}))
    assert not _connect(c, host_ip, ok.port)
    ev = audits.wait(lambda e: e.type == "bad_reputation")
    assert ev.dest_ip == host_ip and ev.effect == "prevent"


def test_unspecified_and_mapped_forms_hit_the_loopback_rule(wired: Any) -> None:
    c, audits, _host_ip, _ok, _bad = wired()
    _start(c, audits)
    c.run_app("/bin/nc -l -p 7777 -e /bin/true; sleep 30")  # a local listener in the container
    _set_policy(audits, RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "prevent", "outbound": {"deny": ["127.0.0.1:7777"]}}}]}))
    time.sleep(0.3)
    assert not _connect(c, "0.0.0.0", 7777)
    ev = audits.wait(lambda e: e.control == "network.outbound.deny" and e.dest_port == 7777)
    assert ev.dest_ip == "127.0.0.1"  # what the kernel actually sent


def test_ruleset_shape() -> None:
    net = NetworkControls.model_validate({"effect": "prevent", "outbound": {
        "deny": ["10.0.0.0/8:25", "[2001:db8::1]:443", {"cidr": "*", "ports": "6667", "protocol": "tcp"}],
        "allow": ["*:443"]}, "bad_reputation_ips": ["203.0.113.0/24"]})
    text = ruleset(net)
    assert "ip daddr 10.0.0.0/8 meta l4proto { tcp, udp } th dport { 25 }" in text
    assert "ip6 daddr 2001:db8::1/128" in text and "tcp dport { 6667 }" in text
    assert "ip daddr @badrep4" in text and "203.0.113.0/24" in text
    assert text.count("goto refuse") == 5
    # stateless: only a new connection's SYN is checked, no conntrack in the container's namespace
    assert "tcp flags & (syn | ack) != syn accept" in text and " ct " not in text
    # DNS steering needs NAT, so conntrack is there anyway: established flows leave at once
    assert "ct state established,related accept" in ruleset(net, dns_port=5353)
    # port-scan/forensic flow logging: once per destination per window, not per connection
    scan = NetworkControls.model_validate({"effect": "alert", "port_scan": {"threshold": 5, "window_s": 30}})
    text = ruleset(scan)
    assert "timeout 30s" in text and "!= @flows4 add @flows4" in text and "jump watch" in text
    # learning counts connections: every new flow (conntrack says which), per destination in the kernel
    text = ruleset(scan, count_flows=True)
    assert "ct state established,related accept" in text and "jump watch" in text
    assert "update @learned4 { ip daddr . meta l4proto . th dport }" in text and "flags dynamic; counter;" in text
    assert "!= @flows4 add @flows4" in text  # the scan's distinct destinations: still once per window
    text = ruleset(NetworkControls.model_validate({"effect": "alert"}), count_flows=True)
    assert "update @learned6" in text and "log prefix" not in text  # nothing per flow to user space


def test_port_scan_detected_then_new_flows_refused_in_kernel(wired: Any) -> None:
    c, audits, host_ip, ok, _bad = wired()
    _start(c, audits)
    _set_policy(audits, RuntimePolicy.model_validate({"rules": [{"name": "net-rule", "network": {
        "effect": "prevent", "port_scan": {"threshold": 10, "window_s": 30}}}]}))
    assert _connect(c, host_ip, ok.port)  # ordinary traffic is fine
    # a scan of 20 closed ports on the cell side
    c.exec("/bin/sh", "-c", f"for p in $(seq 41000 41019); do echo | /bin/nc -w 1 {host_ip} $p; done")
    ev = audits.wait(lambda e: e.type == "port_scan")
    assert ev.effect == "prevent" and "refused for 30s" in ev.message and ev.app_name == "shop"
    assert not _connect(c, host_ip, ok.port)  # quarantined: even the good listener is refused now
    audits.wait(lambda e: e.control == "network.port_scan" and e.dest_port == ok.port)


def test_forensic_trail_rebuilds_the_process_tree_and_connections(garden: Any, runc_root: Any, tmp_path: Any) -> None:
    import json

    from garrison.cell.defender import CellDefender
    from garrison.cell.forensics import ForensicLog
    from tests.cell.conftest import Audits

    audits = Audits()
    d = CellDefender(RuntimePolicy.model_validate({"rules": [{"name": "net-rule"}]}), audits,
                     roots=[str(runc_root)], forensics=ForensicLog(tmp_path / "forensics"))
    audits.defender = d
    d.start()
    try:
        c = garden()
        host_ip, _ = c.veth(next(_subnets))
        ok = TcpServer(host_ip)
        _start(c, audits)
        c.exec("/bin/sh", "-c", f"/bin/echo marker-{c.id}; echo x | /bin/nc -w 2 {host_ip} {ok.port}")
        path = tmp_path / "forensics" / f"{c.id}.jsonl"
        deadline = time.monotonic() + 10
        want = (f'"dest_port":{ok.port}', '"exe":"/bin/echo"')
        while not (path.exists() and all(w in path.read_text() for w in want)):
            assert time.monotonic() < deadline, path.read_text() if path.exists() else "no trail"
            time.sleep(0.1)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        # the shell (argv from the proc connector) and the echo it forked (the file the gate let run)
        shell = next(r for r in records if r["kind"] == "exec" and f"marker-{c.id}" in " ".join(r.get("argv", [])))
        echo = next(r for r in records if r["kind"] == "exec_file" and r["exe"] == "/bin/echo")
        assert echo["allowed"] and echo["layer"] == "lower"
        # the parent is known: the tree can be rebuilt
        assert any(r["kind"] == "fork" and r["pid"] == echo["pid"] and r["ppid"] == shell["pid"] for r in records)
        assert any(r["kind"] == "connect" and r["dest_ip"] == host_ip for r in records)
        # what the console's incident page draws: the echo under the shell that forked it
        from garrison.cell.forensics import container_records
        from garrison.defender.forensics import process_tree

        branch = process_tree(container_records(d.forensics, c.id, 1 << 20), echo["pid"])
        assert branch, records
        node = branch[0]
        while node["pid"] != echo["pid"]:
            node = node["children"][0]
        assert node["ppid"] == shell["pid"] and node["execs"][0]["exe"] == "/bin/echo"
        assert node["execs"][0]["verdict"] == "allowed"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        ok.close()
    finally:
        d.stop()
