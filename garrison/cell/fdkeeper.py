"""Fail-closed exec gate: a tiny process that keeps the cell defender's fanotify group open while the
defender is down, so execs in the containers wait for its restart instead of running ungated.

The kernel allows every held and future permission event once the last fd of a fanotify group is
closed; it never times them out while one is open. The keeper holds a copy of the group's fd (passed
with SCM_RIGHTS over a unix socket in the data folder) and does nothing else: no events read, no
Python threads, no policy. The defender's connection to it is the liveness signal:
- connection closed (the defender died or stopped): the group stays open for `grace` seconds, every
  exec in every container is held meanwhile; then the keeper closes its copy (fail-open: a defender
  that does not come back must not freeze the cell's apps forever) and exits;
- a restarted defender connects within the grace: it takes the same group back (marks still in
  place, queued events answered by it) and refuses the events its predecessor took and never
  answered (see FanotifyPerm.refuse_orphans).
The keeper is forked from the defender (a standalone build has no interpreter to start it with) and
leaves its session, so stopping the defender does not stop it."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path

_MSG = 64
IDLE_EXIT_S = 2.0


class KeeperLink:
    """The defender's side: connect (starting the keeper if there is none), take or hand the group."""

    def __init__(self, path: Path, grace_s: float) -> None:
        self.path = path
        self.grace_s = grace_s
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(self.path))
            return sock
        except OSError:
            sock.close()
        _spawn(self.path, self.grace_s)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.connect(str(self.path))
        return sock

    def take(self) -> int | None:
        """The group the keeper holds (a restart within the grace), or None (a first start)."""
        self.sock.sendall(b"take")
        msg, fds, _flags, _addr = socket.recv_fds(self.sock, _MSG, 1)
        if msg == b"busy":
            raise OSError("another cell defender holds the fanotify keeper")
        return fds[0] if msg == b"fd" and fds else None

    def keep(self, fd: int) -> None:
        """Hand the keeper a copy of a new group."""
        socket.send_fds(self.sock, [b"keep"], [fd])
        if self.sock.recv(_MSG) != b"ok":
            raise OSError("the fanotify keeper did not take the group")

    def close(self) -> None:
        """The defender stops: the keeper holds the group for its grace from now on."""
        self.sock.close()


def _spawn(path: Path, grace_s: float) -> None:
    """Fork the keeper: it binds the socket before the parent goes on."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a keeper that is gone left it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(4)
    pid = os.fork()
    if pid:
        listener.close()
        os.waitpid(pid, 0)  # the first child exits at once; its child is the keeper
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, listener.fileno())
        os.closerange(listener.fileno() + 1, 65536)
        serve(listener, grace_s)
    finally:
        os._exit(0)


def serve(listener: socket.socket, grace_s: float) -> None:
    """The keeper's loop: one defender at a time; the group held until `grace_s` after the last one
    left; exits once it holds nothing and nobody came for `IDLE_EXIT_S`."""
    group: int | None = None
    client: socket.socket | None = None
    alone_since = time.monotonic()
    while True:
        alone = time.monotonic() - alone_since if client is None else 0.0
        if group is not None and alone >= grace_s:
            os.close(group)  # fail-open from here: the kernel allows the held execs
            group = None
        if group is None and alone >= IDLE_EXIT_S:
            return
        ready, _, _ = select.select([listener, *([client] if client else [])], [], [], None if client else 0.2)
        if listener in ready:
            conn, _ = listener.accept()
            if client is None:
                client = conn
            else:
                conn.sendall(b"busy")
                conn.close()
        if client is None or client not in ready:
            continue
        try:
            msg, fds, _flags, _addr = socket.recv_fds(client, _MSG, 1)
        except OSError:
            msg, fds = b"", []
        if msg == b"take" and group is not None:
            socket.send_fds(client, [b"fd"], [group])
        elif msg == b"take":
            client.sendall(b"none")
        elif msg == b"keep" and fds:
            if group is not None:
                os.close(group)
            group, fds = fds[0], fds[1:]
            client.sendall(b"ok")
        elif not msg:  # the defender is gone (or stopped): the grace starts
            client.close()
            client = None
            alone_since = time.monotonic()
        for fd in fds:
            os.close(fd)
