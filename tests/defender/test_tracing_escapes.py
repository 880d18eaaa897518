"""Issue 9.3: no child escapes the ptrace exec stop. clone(CLONE_UNTRACED) is refused in the filter's
path (process or thread) and audited; every other way out of tracing — fork, vfork/posix_spawn, a
double-forked setsid daemon, CLONE_PARENT, a thread that execs, fexecve, execveat(AT_EMPTY_PATH),
PTRACE_TRACEME, a new pid namespace (root) — leaves the process traced, and its denied exec refused
(prevent) or reported (alert) — as root, as the created user and under the Garden-like filter."""

from __future__ import annotations

import re

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python

ESCAPES = r'''
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SIGCHLD, CLONE_VM, CLONE_SIGHAND, CLONE_THREAD = 17, 0x100, 0x800, 0x10000
CLONE_PARENT, CLONE_UNTRACED, CLONE_NEWPID = 0x8000, 0x800000, 0x20000000
DENIED = "/usr/bin/printf"

def out(*a):
    os.write(1, (" ".join(str(x) for x in a) + "\n").encode())

def tracer():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("TracerPid:"))

def attack(tag, how="execv"):
    """In the escaped process: report whether we are traced, then run the denied program."""
    out(tag, "traced", tracer() != 0)
    try:
        if how == "fexecve":
            fd = os.open(DENIED, os.O_RDONLY)
            os.execve(fd, ["printf", f"PWNED-{tag}\n"], {})
        elif how == "execveat":
            fd = os.open(DENIED, os.O_PATH)
            argv = (ctypes.c_char_p * 3)(b"printf", f"PWNED-{tag}\n".encode(), None)
            envp = (ctypes.c_char_p * 1)(None)
            libc.syscall(322, fd, b"", argv, envp, 0x1000)  # execveat(fd, "", AT_EMPTY_PATH)
            raise OSError(ctypes.get_errno(), "execveat")
        else:
            os.execv(DENIED, ["printf", f"PWNED-{tag}\n"])
    except OSError as e:
        out(tag, "refused", e.errno)
    os._exit(0)

def forked(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

# 1. the classic: a raw clone with CLONE_UNTRACED (process), then the same for a thread
r = libc.syscall(56, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0)
if r == 0:
    attack("untraced")
out("untraced-clone", r, ctypes.get_errno())
if r > 0:
    os.waitpid(r, 0)
stack = ctypes.create_string_buffer(1 << 16)
r = libc.syscall(56, CLONE_UNTRACED | CLONE_THREAD | CLONE_SIGHAND | CLONE_VM, 0, 0, 0, 0)
out("untraced-thread", r, ctypes.get_errno())
# CLONE_PARENT: the child becomes our sibling (a child of the defender)
r = libc.syscall(56, CLONE_PARENT, 0, 0, 0, 0)
if r == 0:
    attack("clone-parent")
time.sleep(0.3)
# 2. plain fork, a double-forked setsid daemon, a thread that execs
forked(lambda: attack("fork"))
def daemon():
    os.setsid()
    if os.fork() == 0:
        attack("daemon")
forked(daemon)
time.sleep(0.3)
forked(lambda: threading.Thread(target=attack, args=("thread-exec",)).start() or time.sleep(2))
# 3. exec by fd
forked(lambda: attack("fexecve", "fexecve"))
forked(lambda: attack("execveat", "execveat"))
# 4. vfork (posix_spawn) straight into the denied program
try:
    pid = os.posix_spawn(DENIED, ["printf", "PWNED-spawn\n"], {})
    os.waitpid(pid, 0)
except OSError as e:
    out("spawn", "refused", e.errno)
# 5. asking to be traced by someone else, or untraced
out("traceme", libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
# 6. a new pid namespace (root only; refused otherwise)
if libc.unshare(CLONE_NEWPID) == 0:
    forked(lambda: attack("newpid"))
else:
    out("newpid", "unshare-refused", ctypes.get_errno())
time.sleep(0.3)
out("done")
'''

TAGS = ["clone-parent", "fork", "daemon", "thread-exec", "fexecve", "execveat"]


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_no_child_escapes_the_exec_stop(sandbox: Sandbox, mode3: str, effect: str) -> None:
    py, _ = unpriv_python()
    sandbox.write("esc.py", ESCAPES, mode=0o644)
    pol = rule(processes={"effect": effect, "deny": ["/usr/bin/printf"]})
    r = sandbox.run(pol, [py, "esc.py"], mode=mode3, env={"DEFENDER_PTRACE": "1"}, timeout=90)
    out = r.stdout
    assert "done" in out, r.stderr + out
    # CLONE_UNTRACED: refused in every mode and for every effect, and audited
    assert "untraced-clone -1 1" in out and "untraced-thread -1 1" in out, out
    assert "untraced traced" not in out
    untraced = r.of("process", "kernel.clone_untraced")
    assert len(untraced) >= 2 and all(a["effect"] == "prevent" for a in untraced)
    assert any("thread" in a["message"] for a in untraced)
    assert "traceme -1 1" in out and r.of("process", "kernel.ptrace")
    tags = list(TAGS)
    if "newpid unshare-refused" not in out:
        tags.append("newpid")
    for tag in tags:
        assert f"{tag} traced True" in out, f"{tag} escaped tracing:\n{out}"
    denied = r.of("process", "processes.deny")
    assert all(a["effect"] == effect for a in denied)
    pwned = set(re.findall(r"PWNED-([\w-]+)", out))
    if effect == "prevent":
        assert not pwned, out
        for tag in tags:
            assert f"{tag} refused 13" in out, f"{tag}:\n{out}"
        assert "spawn refused 13" in out
        assert len(denied) >= len(tags) + 1, denied
    else:
        assert pwned >= {*tags, "spawn"}, out
        assert len(denied) >= len(tags) + 1
