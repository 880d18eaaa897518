"""DNS guard: the app's own resolver (glibc via getent and Python's getaddrinfo) is redirected to
the defender's proxy; denied names fail to resolve, answers pin connects."""

from __future__ import annotations

import pytest

from .conftest import HOST4, OTHER4
from .servers import TcpServer

pytestmark = pytest.mark.slow

ZONE = {"good.test": [HOST4], "x.evil.test": [OTHER4], "other.test": [OTHER4]}
GETADDRINFO = """
import socket, sys
for name in sys.argv[1:]:
    try: print(name, sorted({a[4][0] for a in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}))
    except socket.gaierror as e: print(name, "ERR", e.errno)
"""


def test_getent_hosts_allowed_name_resolves_through_the_proxy(run_app):
    r = run_app(
        {"dns": {"effect": "prevent", "deny": ["*.evil.test"]}},
        "",
        argv=["getent", "hosts", "good.test"],
        zone=ZONE,
    )
    assert r.rc == 0 and r.out.split() == [HOST4, "good.test"], r.err
    assert "good.test" in r.extra["dns_queries"]
    assert r.stats["redirected"] >= 1 and not r.audits


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_getent_hosts_denied_name(run_app, effect):
    r = run_app(
        {"dns": {"effect": effect, "deny": ["*.evil.test"]}},
        "",
        argv=["getent", "hosts", "x.evil.test"],
        zone=ZONE,
    )
    audits = r.of("dns")
    assert audits and {a.control for a in audits} == {"dns.deny"}
    assert {a.dest_name for a in audits} == {"x.evil.test"} and {a.effect for a in audits} == {effect}
    assert all(a.exe == "/usr/bin/getent" for a in audits)  # attributed through the redirect table
    if effect == "prevent":
        assert r.rc == 2 and r.out == ""  # getent: key not found
        assert "x.evil.test" not in r.extra["dns_queries"]  # never left the defender
    else:
        assert r.rc == 0 and r.out.split() == [OTHER4, "x.evil.test"]


def test_python_getaddrinfo_allow_list(run_app):
    rule = {"dns": {"effect": "prevent", "allow": ["good.test"]}}
    r = run_app(rule, GETADDRINFO, "good.test", "other.test", zone=ZONE)
    lines = dict(line.split(" ", 1) for line in r.out.splitlines())
    assert lines["good.test"] == f"['{HOST4}']", r.err
    assert lines["other.test"].startswith("ERR -2")  # EAI_NONAME: NXDOMAIN from the proxy
    assert {a.control for a in r.of("dns")} == {"dns.allow"}


PIN = """
import socket, sys
name, port, literal = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ip = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)[0][4][0]
s = socket.socket(); print("by-name", ip, s.connect_ex((ip, port)))
s = socket.socket(); print("literal", literal, s.connect_ex((literal, port)))
"""


@pytest.mark.parametrize("effect", ["prevent", "alert"])
def test_allowed_name_pins_connects_to_its_answers(run_app, ns_call, effect):
    a = ns_call(lambda: TcpServer("0.0.0.0"))
    rule = {"dns": {"effect": effect, "allow": ["good.test"]}, "network": {"effect": "prevent"}}
    r = run_app(rule, PIN, "good.test", str(a.port), OTHER4, zone=ZONE)
    by_name, literal = r.out.splitlines()
    assert by_name == f"by-name {HOST4} 0", r.err
    # no allowed name resolved to OTHER4: refused on prevent, let through (and audited) on alert
    assert literal == f"literal {OTHER4} {111 if effect == 'prevent' else 0}"
    [audit] = r.of("dns")
    assert audit.control == "dns.allow" and audit.dest_ip == OTHER4 and audit.effect == effect


UNCONNECTED = """
import socket, struct, sys
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\\x04good\\x04test\\x00" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(q, ("10.255.255.53", 53))
data, src = s.recvfrom(4096)
print(src[0], src[1], len(data) > 12)
"""


def test_unconnected_resolver_sees_the_nameserver_as_reply_source(run_app):
    """musl-style resolvers sendto() the nameserver and check recvfrom's source address."""
    r = run_app({"dns": {"effect": "prevent", "deny": ["*.evil.test"]}}, UNCONNECTED, zone=ZONE)
    assert r.out.split() == ["10.255.255.53", "53", "True"], r.err


TCP_DNS = """
import socket, struct
q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\\x01x\\x04evil\\x04test\\x00" + struct.pack("!HH", 1, 1)
s = socket.create_connection(("10.255.255.53", 53), timeout=5)
s.sendall(struct.pack("!H", len(q)) + q)
n = struct.unpack("!H", s.recv(2))[0]; r = s.recv(n)
print("rcode", r[3] & 0xF)
"""


def test_dns_over_tcp_is_redirected_too(run_app):
    r = run_app({"dns": {"effect": "prevent", "deny": ["*.evil.test"]}}, TCP_DNS, zone=ZONE)
    assert r.out.strip() == "rcode 3", r.err  # NXDOMAIN
    assert [a.dest_name for a in r.of("dns")] == ["x.evil.test"]


@pytest.mark.parametrize("argv", [["getent", "hosts", "good.test"], None])
def test_glibc_needs_only_the_redirected_connect(run_app, argv):
    """Documented finding: glibc connects its UDP socket, so redirecting connect() is enough; the
    recvfrom source rewrite is for unconnected resolvers only."""
    code = "import socket; print(socket.getaddrinfo('good.test', 80, type=socket.SOCK_STREAM)[0][4][0])"
    r = run_app({"dns": {"effect": "prevent"}}, code, argv=argv, zone=ZONE, without=("recvfrom",))
    assert r.rc == 0 and HOST4 in r.out, r.err
    assert r.stats["redirected"] >= 1
