"""What happens when the cell defender dies (SIGKILL) and what its restart restores, on real runc
containers: the kernel releases fanotify permission events when the group closes, so execs run
ungated (fail-open) while it is down; our nftables table stays in the container's namespace, so
outbound denials go on (fail-closed) and DNS, still redirected to a resolver that is gone, fails
for every name (fail-closed); the restarted defender re-attaches to the running containers, puts the
exec gate and its resolver back, and reports the unprotected window."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import START_SH
from tests.cell.conftest import until as _until
from tests.cell.test_cell_dns import _lookup, _started_wired
from tests.defender.net.conftest import DnsServer
from tests.defender.net.servers import TcpServer

REPO = Path(__file__).resolve().parents[2]


def _connect(c: Any, ip: str, port: int) -> bool:
    r = c.exec("/bin/sh", "-c", f"echo x | /bin/nc -w 3 {ip} {port}; echo rc=$?")
    return "rc=0" in r.stdout


class Cli:
    def __init__(self, tmp: Path, runc_root: Path, policy: Path, upstream: DnsServer) -> None:
        self.audits = tmp / "audits.jsonl"
        self.cmd = [sys.executable, "-m", "garrison", "defender", "cell", "--policy", str(policy),
                    "--runc-root", str(runc_root), "--audit-log", str(self.audits), "--data-folder",
                    str(tmp / "data"), "--dns-upstream", f"{upstream.address[0]}:{upstream.address[1]}", "-q"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def events(self) -> list[dict[str, Any]]:
        if not self.audits.exists():
            return []
        return [json.loads(line) for line in self.audits.read_text().splitlines() if line.strip()]

    def protected(self, cid: str) -> int:
        return sum(1 for e in self.events() if e["control"] == "cell.container_protected"
                   and e["extra"]["container"] == cid)


@pytest.fixture
def upstream() -> Iterator[DnsServer]:
    server = DnsServer({})
    yield server
    server.close()


def test_defender_killed_then_restarted(garden: Any, runc_root: Path, tmp_path: Path, upstream: DnsServer) -> None:
    c, host_ip = _started_wired(garden)
    bad = TcpServer(host_ip)
    try:
        upstream.zone["good.test"] = [host_ip]
        policy = tmp_path / "policy.json"
        policy.write_text(RuntimePolicy.model_validate({"rules": [{
            "name": "cell-rule", "scope": {"orgs": ["acme"]},
            "processes": {"effect": "prevent", "deny": ["wget"]},
            "network": {"effect": "prevent", "outbound": {"deny": [f"{host_ip}:{bad.port}"]}},
            "dns": {"effect": "prevent", "deny": ["evil.test"]}}]}).model_dump_json())  # fmt: skip
        cli = Cli(tmp_path, runc_root, policy, upstream)
        cli.start()
        try:
            _until(lambda: cli.protected(c.id) == 1, what="protected")
            assert "not permitted" in c.exec("/bin/wget", "--help").stderr.lower()
            assert not _connect(c, host_ip, bad.port)
            assert host_ip in _lookup(c, "good.test", host_ip)

            cli.kill()  # SIGKILL: nothing cleans up
            # fail-open: the fanotify group is gone with the process, execs are no longer held
            assert "not permitted" not in c.exec("/bin/wget", "--help").stderr.lower()
            # fail-closed: the nftables table is in the container's namespace, not in the defender
            assert not _connect(c, host_ip, bad.port) and bad.accepted == 0
            # DNS fails closed: still redirected to a resolver that is gone
            down = _lookup(c, "good.test", host_ip)
            assert "rc=0" not in down and "refused" in down, down

            cli.start()  # what monit does
            _until(lambda: cli.protected(c.id) == 2, what="re-attached")
            assert "not permitted" in c.exec("/bin/wget", "--help").stderr.lower()
            assert not _connect(c, host_ip, bad.port)
            assert host_ip in _lookup(c, "good.test", host_ip)
            assert "NXDOMAIN" in _lookup(c, "evil.test", host_ip)
            gap = [e for e in cli.events() if e["control"] == "cell.unclean_restart"]
            assert len(gap) == 1 and gap[0]["severity"] == "high" and gap[0]["extra"]["gap_s"] >= 0
            cli.kill(signal.SIGTERM)  # a clean stop is not reported as a crash next time
            cli.start()
            _until(lambda: cli.protected(c.id) == 3, what="re-attached after a clean stop")
            assert len([e for e in cli.events() if e["control"] == "cell.unclean_restart"]) == 1
            # the policy changed while the defender was down: the table the last run left is cleared
            cli.kill()
            policy.write_text(RuntimePolicy.model_validate({"rules": [{
                "name": "relaxed", "network": {"effect": "disable"}, "dns": {"effect": "disable"}}]}
            ).model_dump_json())  # fmt: skip
            assert not _connect(c, host_ip, bad.port)  # still the old table
            cli.start()
            _until(lambda: cli.protected(c.id) == 4, what="re-attached with the new policy")
            _until(lambda: _connect(c, host_ip, bad.port), what="old table cleared")
        finally:
            cli.kill(signal.SIGTERM)
    finally:
        bad.close()


def test_fail_closed_exec_gate_holds_execs_until_the_restart(garden: Any, runc_root: Path, tmp_path: Path,
                                                              upstream: DnsServer) -> None:
    """--exec-fail-closed: a keeper process holds the fanotify group while the defender is down, so an
    exec started then waits for the restarted defender, which decides it (a denied one refused)."""
    c = garden()
    c.run_app(START_SH)
    policy = tmp_path / "policy.json"
    policy.write_text(RuntimePolicy.model_validate({"rules": [{
        "name": "cell-rule", "processes": {"effect": "prevent", "deny": ["wget"]}}]}).model_dump_json())
    cli = Cli(tmp_path, runc_root, policy, upstream)
    cli.cmd += ["--exec-fail-closed", "60"]
    cli.start()
    held: list[subprocess.Popen[str]] = []
    try:
        _until(lambda: cli.protected(c.id) == 1, what="protected")
        assert "not permitted" in c.exec("/bin/wget", "--help").stderr.lower()
        cli.kill()  # SIGKILL
        runc = ["runc", "--root", str(runc_root), "exec", c.id]
        held = [subprocess.Popen([*runc, "/bin/wget", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True),
                subprocess.Popen([*runc, "/bin/true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        time.sleep(1.5)
        assert [p.poll() for p in held] == [None, None]  # waiting for a defender, not run ungated
        cli.start()  # what monit does
        _, err = held[0].communicate(timeout=60)
        assert "not permitted" in err.lower() and held[0].returncode != 0
        assert held[1].wait(60) == 0
        _until(lambda: len([e for e in cli.events() if e["control"] == "cell.exec_fail_closed"]) == 2,
               what="both runs say the gate is fail-closed")
    finally:
        for p in held:
            if p.poll() is None:
                p.kill()
        cli.kill(signal.SIGTERM)
        for pid in _keepers(tmp_path):  # it would hold the gate for its grace after the test
            os.kill(pid, signal.SIGKILL)


def _keepers(tmp_path: Path) -> list[int]:
    """The keeper forked by this test's defender (same command line), once the defender is gone."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(tmp_path).encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


@contextlib.contextmanager
def _tmpfs_with_prog(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mount of its own (a fanotify mount mark sees only it) holding an executable `prog`."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copy2("/bin/true", mnt / "prog")
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_keeper_releases_the_gate_when_no_defender_returns(tmp_path: Path) -> None:
    """The grace is the bound: a defender that never comes back does not hold the cell's execs forever."""
    from garrison.cell.fdkeeper import KeeperLink
    from garrison.kernel.fanotify import FanotifyPerm

    with _tmpfs_with_prog(tmp_path) as mnt:
        gate = FanotifyPerm()
        gate.mark_mount(str(mnt))
        link = KeeperLink(tmp_path / "keeper.sock", grace_s=2)
        assert link.take() is None  # a first start
        link.keep(gate.fd)
        gate.close()
        link.close()  # the defender is gone: nobody reads the group the keeper holds
        prog = subprocess.Popen(["/bin/sh", "-c", f"exec {mnt / 'prog'}"])  # sh itself is not held
        time.sleep(0.5)
        assert prog.poll() is None  # held
        assert prog.wait(60) == 0  # released after the grace (fail-open), not hanging


def test_takeover_refuses_execs_the_dead_reader_held(tmp_path: Path) -> None:
    """An event read by a defender that died before answering stays held in the kept group; the next
    defender's takeover answers it by fd number (refused: fail-closed), and only it."""
    from garrison.kernel.fanotify import FanotifyPerm

    with _tmpfs_with_prog(tmp_path) as mnt:
        dead = FanotifyPerm()
        dead.mark_mount(str(mnt))
        prog = subprocess.Popen(["/bin/sh", "-c", f"exec {mnt / 'prog'}"], stderr=subprocess.PIPE, text=True)
        events = dead.read()
        assert len(events) == 1
        os.close(events[0].fd)  # the reader died: its fds are gone, the event is still held
        heir = FanotifyPerm.adopt(os.dup(dead.fd))  # what the keeper hands the restarted defender
        dead.close()
        assert heir.refuse_orphans(1 << 16) == 1
        assert prog.wait(30) != 0 and "not permitted" in prog.communicate()[1].lower()
        heir.close()
