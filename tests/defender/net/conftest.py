"""Fixtures for the network guard tests: a private network namespace with non-loopback addresses,
a tiny real DNS server on loopback, and a runner that supervises an app (as `nobody`) in that
namespace with the guard's handlers."""

from __future__ import annotations

import ctypes
import os
import queue
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.message
import dns.rrset
import pytest

from garrison.defender.net import TRAP_ONLY_IF_ARG_NONZERO, NetworkGuard
from garrison.defender.net.standalone import StandaloneContext, Supervised
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule

T = TypeVar("T")
APP_PYTHON = "/usr/bin/python3"  # readable by `nobody` (the venv lives under /root)
HOST4 = "10.99.0.1"  # addresses on a veth link inside the test namespace: local, not loopback
OTHER4 = "10.99.0.2"
HOST6 = "fd00:99::1"
OTHER6 = "fd00:99::2"
CLONE_NEWNET = 0x40000000


def _kernel_ok() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and to run the app as nobody"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    if not os.path.exists(APP_PYTHON):
        return f"needs {APP_PYTHON} for the unprivileged app"
    from garrison.kernel import pidfd

    if not all(pidfd.available()):
        return "kernel lacks pidfd_open/pidfd_getfd"
    return None


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    reason = _kernel_ok()
    if reason:
        pytest.skip(reason)
    name = f"garrison-net-{uuid.uuid4().hex[:8]}"
    cmds = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        ["ip", "-n", name, "link", "set", "d0", "up"],
        ["ip", "-n", name, "link", "set", "d1", "up"],
        ["ip", "-n", name, "addr", "add", f"{HOST4}/24", "dev", "d0"],
        ["ip", "-n", name, "addr", "add", f"{OTHER4}/24", "dev", "d0"],
        ["ip", "-n", name, "addr", "add", f"{HOST6}/64", "dev", "d0", "nodad"],
        ["ip", "-n", name, "addr", "add", f"{OTHER6}/64", "dev", "d0", "nodad"],
    ]
    try:
        for c in cmds:
            subprocess.run(c, check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(f"cannot create a network namespace: {exc.stderr.decode().strip()}")
    yield f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run fn on a thread that joined the namespace; sockets, threads and children it makes live there."""
    out: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            out.put((True, fn()))
        except BaseException as exc:
            out.put((False, exc))
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    ok, val = out.get()
    if not ok:
        raise val
    return val  # type: ignore[no-any-return]


class DnsServer:
    """A real (tiny) authoritative server on loopback: A/AAAA from `zone`, NXDOMAIN otherwise."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, client = self.sock.recvfrom(4096)
            except OSError:
                return
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            name = q.question[0].name.to_text(omit_final_dot=True)
            self.queries.append(name)
            ips = self.zone.get(name)
            if ips is None:
                r.set_rcode(3)
            for ip in ips or []:
                rdtype = "AAAA" if ":" in ip else "A"
                if q.question[0].rdtype == dns.rdatatype.from_text(rdtype):
                    r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", rdtype, ip))
            self.sock.sendto(r.to_wire(), client)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Run:
    rc: int
    out: str
    err: str
    audits: list[AuditEvent]
    stats: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def of(self, typ: str) -> list[AuditEvent]:
        return [a for a in self.audits if a.type == typ]


def rule_from(doc: dict[str, Any]) -> Rule:
    return Rule.model_validate({"name": "test-rule", **doc})


@pytest.fixture(params=["python", "native"])
def dataplane(request: pytest.FixtureRequest) -> str:
    """Every guard scenario runs on both data planes: the pure-Python listener and the C loop."""
    if request.param == "native":
        from garrison.defender.dataplane import native_available

        ok, why = native_available()
        if not ok:
            pytest.skip(why)
    return str(request.param)


@pytest.fixture
def run_app(netns: str, dataplane: str) -> Callable[..., Run]:
    """run_app(rule_doc, code, *args, zone=…, emulate=True, getfd=None, servers=fn) → Run.

    `getfd=False` runs the guard as in Garden (no pidfd_getfd: socket-swap emulation).

    `servers(ns)` is called inside the namespace before the app starts (to bind listeners) and its
    return value is passed to the app code's argv as strings and kept in Run.extra["servers"].
    """

    def run(
        rule_doc: dict[str, Any] | None,
        code: str,
        *args: str,
        zone: dict[str, list[str]] | None = None,
        emulate: bool = True,
        getfd: bool | None = None,
        timeout: float = 120,
        argv: list[str] | None = None,
        during: Callable[[StandaloneContext], None] | None = None,
        without: tuple[str, ...] = (),
        dataplane_options: dict[str, Any] | None = None,
    ) -> Run:
        def scenario() -> Run:
            up = DnsServer(zone or {})
            ctx = StandaloneContext(rule_from(rule_doc) if rule_doc is not None else None)
            guard = NetworkGuard(ctx, upstreams=[up.address], emulate=emulate, getfd=getfd)
            guard.start()
            try:
                cmd = argv if argv is not None else [APP_PYTHON, "-c", code, *args]
                sup = Supervised(
                    cmd,
                    {k: h for k, h in guard.handlers.items() if k not in without},
                    ctx,
                    nonzero_arg=TRAP_ONLY_IF_ARG_NONZERO,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    dataplane=dataplane,
                    guard=guard,
                    dataplane_options=dataplane_options,
                )
                if during is not None:
                    during(ctx)
                rc, out, err = sup.communicate(timeout=timeout)
                extra: dict[str, Any] = {"dns_queries": up.queries, "dataplane": dataplane}
                if sup.native is not None:
                    extra["native"] = sup.native.stats()
                return Run(rc, out, err, list(ctx.audits), dict(guard.stats), extra)
            finally:
                guard.stop()
                up.close()

        return in_netns(netns, scenario)

    return run


@pytest.fixture
def ns_call(netns: str) -> Callable[[Callable[[], T]], T]:
    return lambda fn: in_netns(netns, fn)
