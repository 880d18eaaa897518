"""User access monitoring on a cell: logins and failures, sudo and su, accounts and SSH keys.

Sources, each read from where it was left off (offsets kept in a state file, rotation noticed by
inode): the syslog auth file (/var/log/auth.log on Ubuntu stemcells), wtmp/btmp records, and a
snapshot of accounts, sudo-capable groups and authorized_keys compared with the last one.
`bosh ssh` creates users named `bosh_<random>`: they are flagged as such."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from garrison.host.model import HostEvent

AUTH_LOGS = ("/var/log/auth.log", "/var/log/secure")
WTMP, BTMP = "/var/log/wtmp", "/var/log/btmp"
ADMIN_GROUPS = ("sudo", "admin", "wheel", "root", "bosh_sudoers", "bosh_sshers")
_MAX_READ = 16 * 1024 * 1024  # per source per poll: a flood is read in slices, never all at once

_SYSLOG = re.compile(r"^(?P<stamp>\S+(?:\s+\d+\s+[\d:]+)?)\s+(?P<host>\S+)\s+(?P<prog>[\w.\-/]+)(?:\[(?P<pid>\d+)\])?:\s+(?P<msg>.*)$")


@dataclass(frozen=True)
class _Rule:
    prog: str
    pattern: re.Pattern[str]
    action: str
    severity: str


_RULES = (
    _Rule("sshd", re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<src>\S+) port \d+"), "login", "low"),
    _Rule("sshd", re.compile(r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S+) from (?P<src>\S+) port \d+"), "login_failed", "medium"),
    _Rule("sshd", re.compile(r"^Invalid user (?P<user>\S*) from (?P<src>\S+)"), "login_failed", "medium"),
    _Rule("sudo", re.compile(r"^\s*(?P<user>\S+) : (?:(?P<fail>\d+ incorrect password attempts?|user NOT in sudoers|command not allowed) ; )?(?:TTY=(?P<src>\S+) ; )?PWD=\S+ ; USER=(?P<target>\S+) ; COMMAND=(?P<command>.*)$"), "sudo", "medium"),
    _Rule("sudo", re.compile(r"^pam_unix\(sudo:auth\): authentication failure;.*\bruser=(?P<user>\S*)"), "sudo_failed", "high"),
    _Rule("su", re.compile(r"^\(to (?P<target>\S+)\) (?P<user>\S+) on (?P<src>\S+)"), "su", "medium"),
    _Rule("su", re.compile(r"^FAILED SU \(to (?P<target>\S+)\) (?P<user>\S+) on (?P<src>\S+)"), "su_failed", "high"),
    _Rule("su", re.compile(r"^pam_unix\(su(?:-l)?:auth\): authentication failure;.*\bruser=(?P<user>\S*)"), "su_failed", "high"),
    _Rule("useradd", re.compile(r"^new user: name=(?P<user>[^,]+), UID=(?P<uid>\d+)"), "account_created", "high"),
    _Rule("userdel", re.compile(r"^delete user '(?P<user>[^']+)'"), "account_deleted", "medium"),
    _Rule("usermod", re.compile(r"^(?:add '(?P<user>[^']+)' to (?:shadow )?group '(?P<group>[^']+)'|change user '(?P<user2>[^']+)' (?P<what>.*))"), "account_changed", "high"),
    _Rule("passwd", re.compile(r"^pam_unix\(passwd:chauthtok\): password changed for (?P<user>\S+)"), "password_changed", "medium"),
    _Rule("chpasswd", re.compile(r"^pam_unix\(chpasswd:chauthtok\): password changed for (?P<user>\S+)"), "password_changed", "medium"),
)


def parse_auth_line(line: str, host: str) -> HostEvent | None:
    """One syslog line of the auth facility as an access event (None when it is not one)."""
    m = _SYSLOG.match(line.rstrip("\n"))
    if not m:
        return None
    prog, msg = os.path.basename(m["prog"]), m["msg"]
    for rule in _RULES:
        if rule.prog != prog:
            continue
        r = rule.pattern.match(msg)
        if not r:
            continue
        g = {k: v for k, v in r.groupdict().items() if v}
        user = g.get("user") or g.get("user2")
        action, severity = rule.action, rule.severity
        if action == "sudo" and g.get("fail"):
            action, severity = "sudo_failed", "high"
        if user and user.startswith("bosh_") and action in ("login", "account_created"):
            severity = "medium" if action == "login" else "high"
            g["bosh_ssh"] = "true"
        if action == "account_changed" and g.get("group") not in ADMIN_GROUPS and user:
            severity = "medium"
        return HostEvent(
            host=host, type="access", action=action, severity=severity,  # type: ignore[arg-type]
            user=user, source=g.get("src"), pid=int(m["pid"]) if m["pid"] else None, process=prog,
            message=msg[:4000], extra={k: v for k, v in g.items() if k not in ("user", "src")},
        )
    return None


# struct utmp on Linux x86_64 (utmp.h): 384 bytes
_UTMP = struct.Struct("=h2xi32s4s32s256shhiii4i20s")
USER_PROCESS = 7


def parse_utmp(data: bytes, host: str, *, failed: bool) -> Iterator[HostEvent]:
    """wtmp (logins) or btmp (failed logins) records."""
    size = _UTMP.size
    for off in range(0, len(data) - size + 1, size):
        (ut_type, pid, line, _id, user, rhost, _e1, _e2, _sess, sec, _usec, *_addr, _unused) = (
            _UTMP.unpack_from(data, off)
        )
        if ut_type != USER_PROCESS:
            continue
        name = user.split(b"\0", 1)[0].decode(errors="replace")
        src = rhost.split(b"\0", 1)[0].decode(errors="replace") or line.split(b"\0", 1)[0].decode(errors="replace")
        yield HostEvent(
            host=host, type="access", time=float(sec), action="login_failed" if failed else "login",
            severity="medium" if failed else "low", user=name, source=src, pid=pid or None,
            process="btmp" if failed else "wtmp",
            message=f"{'failed login' if failed else 'login'} of {name} from {src}",
            extra={"bosh_ssh": "true"} if name.startswith("bosh_") else {},
        )


def account_snapshot(root: Path = Path("/")) -> dict[str, object]:
    """Accounts (name -> uid), members of admin groups, and a hash of each authorized_keys file."""
    users: dict[str, int] = {}
    keys: dict[str, str] = {}
    homes: dict[str, str] = {}
    if str(root) == "/":
        entries = [(p.pw_name, p.pw_uid, p.pw_dir) for p in pwd.getpwall()]
        groups = {g.gr_name: sorted(g.gr_mem) for g in grp.getgrall() if g.gr_name in ADMIN_GROUPS}
    else:
        entries, groups = _read_passwd(root), _read_groups(root)
    for name, uid, home in entries:
        users[name] = uid
        homes[name] = home
    for name, home in homes.items():
        for rel in (".ssh/authorized_keys", ".ssh/authorized_keys2"):
            path = root / home.lstrip("/") / rel
            try:
                keys[f"{name}:{rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue
    return {"users": users, "admin_groups": groups, "authorized_keys": keys}


def _read_passwd(root: Path) -> list[tuple[str, int, str]]:
    out = []
    for line in (root / "etc/passwd").read_text(errors="replace").splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[2].isdigit():
            out.append((f[0], int(f[2]), f[5]))
    return out


def _read_groups(root: Path) -> dict[str, list[str]]:
    out = {}
    for line in (root / "etc/group").read_text(errors="replace").splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[0] in ADMIN_GROUPS:
            out[f[0]] = sorted(m for m in f[3].split(",") if m)
    return out


def diff_accounts(old: dict, new: dict, host: str) -> list[HostEvent]:
    """Accounts added/removed, uid changed (uid 0 is a privilege change), admin group members,
    authorized_keys added or changed."""
    events = []
    ou, nu = old.get("users", {}), new.get("users", {})
    for name in sorted(set(nu) - set(ou)):
        sev = "critical" if nu[name] == 0 else "high"
        events.append(_acct(host, "account_created", sev, name, f"new account {name} (uid {nu[name]})"))
    for name in sorted(set(ou) - set(nu)):
        events.append(_acct(host, "account_deleted", "medium", name, f"account {name} removed"))
    for name in sorted(set(ou) & set(nu)):
        if ou[name] != nu[name]:
            sev = "critical" if nu[name] == 0 else "high"
            events.append(_acct(host, "privilege_changed", sev, name, f"uid of {name}: {ou[name]} -> {nu[name]}"))
    og, ng = old.get("admin_groups", {}), new.get("admin_groups", {})
    for group in sorted(ng):
        for member in sorted(set(ng[group]) - set(og.get(group, []))):
            events.append(_acct(host, "privilege_changed", "high", member, f"{member} added to group {group}"))
    ok, nk = old.get("authorized_keys", {}), new.get("authorized_keys", {})
    for key in sorted(nk):
        if ok.get(key) != nk[key]:
            user = key.split(":", 1)[0]
            what = "added" if key not in ok else "changed"
            events.append(_acct(host, "ssh_key_changed", "high", user, f"SSH authorized keys of {user} {what}"))
    return events


def _acct(host: str, action: str, severity: str, user: str, message: str) -> HostEvent:
    extra = {"bosh_ssh": "true"} if user.startswith("bosh_") else {}
    return HostEvent(host=host, type="access", action=action, severity=severity,  # type: ignore[arg-type]
                     user=user, process="accounts", message=message, extra=extra)


class AccessMonitor:
    """Polls every source from where it stopped; state kept in one JSON file (mode 0600)."""

    def __init__(self, state: Path, *, auth_logs: tuple[str, ...] = AUTH_LOGS, wtmp: str = WTMP,
                 btmp: str = BTMP, root: Path = Path("/"), host: str | None = None) -> None:
        self.state_path, self.auth_logs, self.wtmp, self.btmp, self.root = state, auth_logs, wtmp, btmp, root
        self.host = host or socket.gethostname()
        try:
            self.state = json.loads(state.read_text())
        except (OSError, ValueError):
            self.state = {}

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f)
        os.replace(tmp, self.state_path)

    def _new_bytes(self, path: str, *, record: int = 1) -> bytes:
        """What was appended to `path` since the last poll (from the start after a rotation)."""
        try:
            st = os.stat(path)
        except OSError:
            return b""
        pos = self.state.get("offsets", {}).get(path)
        start = pos["offset"] if pos and pos["ino"] == st.st_ino and pos["offset"] <= st.st_size else 0
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(_MAX_READ)
        # a half-written record or line waits for the next poll
        data = data[: len(data) - len(data) % record] if record > 1 else data[: data.rfind(b"\n") + 1]
        self.state.setdefault("offsets", {})[path] = {"ino": st.st_ino, "offset": start + len(data)}
        return data

    def poll(self) -> list[HostEvent]:
        events: list[HostEvent] = []
        for log in self.auth_logs:
            for line in self._new_bytes(log).decode("utf-8", errors="replace").splitlines():
                ev = parse_auth_line(line, self.host)
                if ev:
                    events.append(ev)
        for path, failed in ((self.wtmp, False), (self.btmp, True)):
            events.extend(parse_utmp(self._new_bytes(path, record=_UTMP.size), self.host, failed=failed))
        snap = account_snapshot(self.root)
        if "accounts" in self.state:
            events.extend(diff_accounts(self.state["accounts"], snap, self.host))
        self.state["accounts"] = snap
        self._save()
        return events
