"""Connection limits (issue 10 #5, #8) against a real console process.

- File descriptors: started with `ulimit -n` 64 (hard 320), the console raises its soft limit to the
  hard one, keeps a reserve for the store and refuses further defender connections with
  503 + Retry-After while the API (and its SQLite store) keeps working; /metrics says so.
- HTTPS: a connection that never finishes its TLS handshake, or never sends its request headers, is
  closed by the console; one address cannot hold more than the per-address cap.
"""

from __future__ import annotations

import re
import resource
import socket
import ssl
import time

import httpx
import pytest

from tests.fixtures.console import RunningConsole

SOFT, HARD = 64, 320


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


def _metrics(c: RunningConsole) -> str:
    return httpx.get(c.url + "/metrics", verify=c.ssl_context(), auth=(c.admin_user, c.admin_password)).text


def _value(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in /metrics"
    return float(m.group(1))


@pytest.fixture
def fd_console(tmp_path):
    import subprocess

    original = subprocess.Popen.__init__

    def popen(self, *args, **kwargs):  # the console process starts with a small soft limit
        kwargs["preexec_fn"] = _limited
        original(self, *args, **kwargs)

    subprocess.Popen.__init__ = popen  # type: ignore[method-assign]
    try:
        c = RunningConsole(tmp_path / "console").start()
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]
    try:
        yield c
    finally:
        c.stop()


def _ws_upgrade(c: RunningConsole) -> tuple[ssl.SSLSocket, bytes]:
    """A raw defender-channel connection: TLS + WebSocket upgrade; returns the socket and the answer."""
    ctx = ssl.create_default_context(cadata=c.ca_pem)
    raw = socket.create_connection(("127.0.0.1", c.defender_port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def test_fd_limit_raised_and_defenders_refused_before_the_store_starves(fd_console):
    c = fd_console
    limits = (c.data_dir / "console.json").read_text()
    assert limits
    with open(f"/proc/{c.proc.pid}/limits") as f:
        line = next(ln for ln in f if ln.startswith("Max open files"))
    assert line.split()[3:5] == [str(HARD), str(HARD)]  # soft raised to hard
    text = _metrics(c)
    assert _value(text, "garrison_fd_limit") == HARD
    reserve = _value(text, "garrison_fd_reserve")
    assert reserve >= 64
    held: list[ssl.SSLSocket] = []
    refused_head = b""
    try:
        for _ in range(HARD):
            s, head = _ws_upgrade(c)
            if head.startswith(b"HTTP/1.1 101"):
                held.append(s)
                continue
            refused_head = head
            s.close()
            break
        assert refused_head.startswith(b"HTTP/1.1 503"), refused_head[:200]
        assert re.search(rb"(?im)^retry-after: \d+", refused_head)
        assert len(held) > 100  # far beyond the old soft limit of 64
        # The store and the API still work with the reserve kept free.
        with c.api() as api:
            for i in range(20):
                assert api.get("/defenders").status_code == 200
                assert (
                    api.put("/policies/runtime/app-embedded", json={"rules": [{"name": f"r{i}"}]}).status_code
                    == 200
                )
        text = _metrics(c)
        assert (
            _value(text, "garrison_connections_refused_total", '{listener="channel",reason="fd_limit"}') >= 1
        )
        assert _value(text, "garrison_open_fds") >= HARD - reserve - 5
    finally:
        for s in held:
            s.close()
    # Once descriptors are free again, defenders are admitted again.
    deadline = time.monotonic() + 30
    while True:
        s, head = _ws_upgrade(c)
        s.close()
        if head.startswith(b"HTTP/1.1 101") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert head.startswith(b"HTTP/1.1 101")
    assert "Traceback" not in c.log() and "unable to open database file" not in c.log()


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_https_connections_are_closed_and_capped(console_factory):
    c = console_factory(env={"GARRISON_HTTPS_LIMITS": "handshake=1,headers=1,per_address=8"})
    # 1) TCP connected, TLS never started: closed after the handshake timeout.
    no_tls = socket.create_connection(("127.0.0.1", c.port))
    # 2) TLS done, no request headers: closed after the header timeout.
    ctx = ssl.create_default_context(cadata=c.ca_pem)
    no_headers = ctx.wrap_socket(socket.create_connection(("127.0.0.1", c.port)), server_hostname="127.0.0.1")
    # 3) Headers started but never finished (slowloris).
    slow = ctx.wrap_socket(socket.create_connection(("127.0.0.1", c.port)), server_hostname="127.0.0.1")
    slow.sendall(b"GET /api/v1/_ping HTTP/1.1\r\nHost: x\r\n")
    assert _closed_by_server(no_headers, 30)
    assert _closed_by_server(slow, 30)
    assert _closed_by_server(no_tls, 30)
    # 4) One address holds at most the cap (the test console uses 8); others are closed at once.
    held = []
    try:
        for _ in range(12):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", c.port)), server_hostname="127.0.0.1")
            held.append(s)
        time.sleep(0.5)
        closed = sum(_closed_by_server(s, 0.5) for s in held)
        assert closed >= 4
    finally:
        for s in held:
            s.close()
    text = _metrics(c)
    assert (
        _value(text, "garrison_connections_refused_total", '{listener="https",reason="header_timeout"}') >= 2
    )
    assert _value(text, "garrison_connections_refused_total", '{listener="https",reason="per_address"}') >= 4
