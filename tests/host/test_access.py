"""User access monitoring with real tools: rsyslogd writing the auth log, useradd/usermod/userdel,
sudo, su, logger as sshd would log, and wtmp/btmp records written by util-linux's utmpdump."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.host.access import AccessMonitor, parse_auth_line

GARRISON = [sys.executable, "-m", "garrison"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd, rsyslogd on /dev/log)")


@pytest.fixture
def auth_log(tmp_path: Path) -> Iterator[Path]:
    """A real rsyslogd on /dev/log writing the auth facilities, as on a stemcell."""
    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslog not installed")
    if os.path.exists("/dev/log"):  # a syslog daemon runs already: read the auth log it writes
        if not os.path.exists("/var/log/auth.log"):
            pytest.skip("/dev/log is served by a syslog daemon that writes no /var/log/auth.log")
        yield Path("/var/log/auth.log")
        return
    log = tmp_path / "auth.log"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{tmp_path}")\n'
        'module(load="imuxsock" SysSock.Name="/dev/log")\n'
        f'auth,authpriv.* action(type="omfile" file="{log}" template="RSYSLOG_TraditionalFileFormat")\n'
    )
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")])
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists("/dev/log"):
            assert time.monotonic() < deadline and proc.poll() is None, "rsyslogd did not start"
            time.sleep(0.05)
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if os.path.exists("/dev/log"):
            os.unlink("/dev/log")


def _wait_for(log: Path, text: str) -> None:
    deadline = time.monotonic() + 10
    while not (log.exists() and text in log.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never reached {log}"
        time.sleep(0.05)


def _user() -> str:
    return "gt" + uuid.uuid4().hex[:8]


def test_accounts_sudo_su_and_ssh_lines_become_events(tmp_path: Path, auth_log: Path) -> None:
    mon = AccessMonitor(tmp_path / "state.json", auth_logs=(str(auth_log),), wtmp="/nonexistent",
                        btmp="/nonexistent")
    mon.poll()  # the first poll takes the current accounts as the reference
    name, bosh = _user(), "bosh_" + uuid.uuid4().hex[:8]
    try:
        subprocess.run(["useradd", "-m", name], check=True)
        subprocess.run(["useradd", "-m", bosh], check=True)
        subprocess.run(["usermod", "-aG", "sudo", name], check=True)
        keys = Path(f"/home/{name}/.ssh")
        keys.mkdir()
        (keys / "authorized_keys").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest attacker@evil\n")
        subprocess.run(["sudo", "-u", "nobody", "/bin/true"], check=True)
        subprocess.run(["su", "-s", "/bin/true", "nobody"], check=True)
        subprocess.run(["logger", "-p", "authpriv.info", "-t", "sshd", "--id=4242",
                        "Failed password for invalid user admin from 127.0.0.9 port 51022 ssh2"], check=True)
        subprocess.run(["logger", "-p", "authpriv.info", "-t", "sshd", "--id=4243",
                        f"Accepted publickey for {bosh} from 127.0.0.8 port 40000 ssh2: ED25519 SHA256:x"],
                       check=True)
        _wait_for(auth_log, f"Accepted publickey for {bosh}")
        events = mon.poll()
    finally:
        for user in (name, bosh):
            subprocess.run(["userdel", "-r", user], capture_output=True)
    kinds = {(e.action, e.user) for e in events}
    assert ("account_created", name) in kinds and ("account_created", bosh) in kinds
    assert ("privilege_changed", name) in kinds  # added to sudo
    assert ("ssh_key_changed", name) in kinds
    assert any(e.action == "sudo" and e.user == "root" and "COMMAND=/bin/true" in e.message for e in events)
    assert [(e.user, e.extra["target"]) for e in events if e.action == "su"] == [("root", "nobody")]
    failed = [e for e in events if e.action == "login_failed"]
    assert failed and failed[0].user == "admin" and failed[0].source == "127.0.0.9"
    login = next(e for e in events if e.action == "login" and e.user == bosh)
    assert login.extra.get("bosh_ssh") == "true" and login.source == "127.0.0.8"
    # offsets are kept: a second poll reports nothing already reported
    again = [e for e in mon.poll() if e.action not in ("account_deleted",)]
    assert again == []


def test_wtmp_btmp_records_and_rotation(tmp_path: Path) -> None:
    if shutil.which("utmpdump") is None:
        pytest.skip("utmpdump (util-linux) missing")

    def write(path: Path, user: str, host: str) -> None:
        line = (f"[7] [01234] [ts/0] [{user}    ] [pts/0       ] [{host}        ] "
                f"[127.0.0.5      ] [2026-12-02T05:00:00,000000+00:00]\n")
        data = subprocess.run(["utmpdump", "-r"], input=line.encode(), capture_output=True, check=True).stdout
        with path.open("ab") as f:
            f.write(data)

    wtmp, btmp = tmp_path / "wtmp", tmp_path / "btmp"
    write(wtmp, "vcap", "10.0.0.5")
    write(btmp, "root", "203.0.113.9")
    mon = AccessMonitor(tmp_path / "state.json", auth_logs=(), wtmp=str(wtmp), btmp=str(btmp))
    events = [e for e in mon.poll() if e.process in ("wtmp", "btmp")]
    assert [(e.action, e.user, e.source) for e in events] == [
        ("login", "vcap", "10.0.0.5"), ("login_failed", "root", "203.0.113.9")]
    write(wtmp, "bosh_abc", "10.0.0.6")
    more = [e for e in AccessMonitor(tmp_path / "state.json", auth_logs=(), wtmp=str(wtmp), btmp=str(btmp)).poll()
            if e.process == "wtmp"]
    assert [(e.user, e.extra.get("bosh_ssh")) for e in more] == [("bosh_abc", "true")]
    wtmp.unlink()  # rotated: a new file is read from its start
    write(wtmp, "vcap", "10.0.0.7")
    rotated = [e for e in AccessMonitor(tmp_path / "state.json", auth_logs=(), wtmp=str(wtmp),
                                        btmp=str(btmp)).poll() if e.process == "wtmp"]
    assert [e.source for e in rotated] == ["10.0.0.7"]


@pytest.mark.parametrize(
    ("line", "action", "user"),
    [
        ("Dec  2 05:01:02 cell sshd[77]: Failed password for vcap from 127.0.0.2 port 4 ssh2", "login_failed", "vcap"),
        ("2026-12-02T05:01:02.1+00:00 cell sshd[77]: Invalid user oracle from 127.0.0.3 port 9", "login_failed", "oracle"),
        ("Dec  2 05:01:02 cell sudo:   vcap : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root ; "
         "COMMAND=/bin/sh", "sudo_failed", "vcap"),
        ("Dec  2 05:01:02 cell su[9]: FAILED SU (to root) vcap on pts/1", "su_failed", "vcap"),
        ("Dec  2 05:01:02 cell userdel[9]: delete user 'olduser'", "account_deleted", "olduser"),
        ("Dec  2 05:01:02 cell CRON[9]: pam_unix(cron:session): session opened for user root", None, None),
    ],
)
def test_auth_line_variants(line: str, action: str | None, user: str | None) -> None:
    ev = parse_auth_line(line, "cell")
    assert (ev.action, ev.user) == (action, user) if ev else action is None


def test_cli_access_json(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Dec  2 05:01:02 cell sshd[77]: Failed password for root from 127.0.0.2 port 4 ssh2\n")
    proc = subprocess.run([*GARRISON, "host", "access", "--json", "--auth-log", str(log), "--state",
                           str(tmp_path / "s")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '"login_failed"' in proc.stdout
