"""Issue 9.4: every exec path is resolved as the app sees it — its root, cwd and fds, /proc/self and
/proc/thread-self meaning the app (never the supervisor), symlink chains through them — and under
prevent an exec whose target cannot be identified is refused. Checked with the seccomp pre-check
alone (DEFENDER_PTRACE=0) and with the default mechanisms, in the three modes."""

from __future__ import annotations

import re

import pytest

from tests.defender.helpers import Sandbox, rule, unpriv_python

ATTACKS = r'''
import ctypes, os, shutil, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
APP = os.getcwd()
shutil.copy("/usr/bin/printf", "dropped")  # written after start: drift
os.chmod("dropped", 0o755)
DENIED = "/usr/bin/printf"

def run(tag, how):
    """Fork; the child execs as `how` says. Report: ran (PWNED-tag on stdout) or the errno."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            how(tag)
        except OSError as e:
            os.write(w, str(e.errno).encode())
        os._exit(0)
    os.close(w)
    err = os.read(r, 16).decode()
    os.waitpid(pid, 0)
    print(tag, "errno", err or "none", flush=True)

def argv(tag):
    return ["x", f"PWNED-{tag}\n"]

def link(name, target):
    if os.path.lexists(name):
        os.unlink(name)
    os.symlink(target, name)
    return os.path.join(APP, name)

def in_sub():
    """The app's cwd, not the defender's: /proc/self/cwd differs between the two."""
    os.makedirs("sub", exist_ok=True)
    shutil.copy("dropped", "sub/payload")  # no such name in the defender's cwd
    os.chdir("sub")

def via_cwd(tag):
    path = link("l-cwd", "/proc/self/cwd/payload")
    in_sub()
    os.execv(path, argv(tag))

def via_thread_self(tag):
    path = link("l-ts", "/proc/thread-self/cwd/payload")
    in_sub()
    os.execv(path, argv(tag))

def via_fd_link(tag):
    fd = os.open("dropped", os.O_RDONLY)
    os.execv(link("l-fd", f"/proc/self/fd/{fd}"), argv(tag))

def via_fd_path(tag):
    fd = os.open(DENIED, os.O_RDONLY)
    os.execv(f"/proc/self/fd/{fd}", argv(tag))

def via_chain(tag):
    link("l-c3", f"/proc/self/root{APP}/dropped")
    link("l-c2", "../app/l-c3")
    os.execv(link("l-c1", "l-c2"), argv(tag))

def via_dirfd(tag):
    d = os.open(APP, os.O_RDONLY | os.O_DIRECTORY)
    a = (ctypes.c_char_p * 3)(b"x", f"PWNED-{tag}\n".encode(), None)
    libc.syscall(322, d, b"dropped", a, (ctypes.c_char_p * 1)(None), 0)
    raise OSError(ctypes.get_errno(), "execveat")

def via_deleted_fd(tag):
    shutil.copy("dropped", "gone")
    fd = os.open("gone", os.O_RDONLY)
    os.unlink("gone")
    os.execve(fd, argv(tag), {})  # fexecve of a file with no name any more

def via_cwd_fd_dir(tag):
    fd = os.open(APP, os.O_RDONLY | os.O_DIRECTORY)
    os.chdir("/")
    os.execv(f"/proc/self/fd/{fd}/dropped", argv(tag))

def loop(tag):
    link("l-loop-a", "l-loop-b")
    os.execv(link("l-loop-b", "l-loop-a"), argv(tag))

def in_chroot(tag):
    jail = os.path.join(APP, "jail")
    os.makedirs(jail + "/usr/bin", exist_ok=True)
    shutil.copy("dropped", jail + "/usr/bin/true")  # outside the jail /usr/bin/true is baseline
    try:
        os.chroot(jail)
    except PermissionError:
        os._exit(0)
    os.execv("/usr/bin/true", argv(tag))

def in_mount_ns(tag):
    """Root: a private mount namespace where /usr/bin/true is the dropped binary (bind mount)."""
    if libc.unshare(0x20000) != 0:  # CLONE_NEWNS
        os._exit(0)
    libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None)  # MS_PRIVATE | MS_REC
    shutil.copy("/usr/bin/echo", "bound")  # not denied: only drift can refuse it
    if libc.mount(os.path.join(APP, "bound").encode(), b"/usr/bin/true", None, 0x1000, None) != 0:  # MS_BIND
        os.write(1, b"mntns mount-refused\n")  # Landlock (drift prevent) forbids mounts: no bypass
        os._exit(0)
    os.execv("/usr/bin/true", argv(tag))

def own_cwd_thread(tag):
    """A thread with a cwd of its own (unshare CLONE_FS) execs a relative name: not the leader's."""
    import threading
    os.makedirs("sub2", exist_ok=True)
    shutil.copy("dropped", "sub2/payload2")  # no such name in the leader's (or the defender's) cwd
    def go():
        libc.unshare(0x200)  # CLONE_FS
        os.chdir("sub2")
        try:
            os.execv("payload2", argv(tag))
        except OSError as e:
            os.write(1, f"{tag} errno {e.errno}\n".encode())
            os._exit(0)
    threading.Thread(target=go).start()
    import time
    time.sleep(5)

for tag, how in [("thread-cwd", own_cwd_thread), ("mntns", in_mount_ns), ("cwd", via_cwd), ("thread-self", via_thread_self), ("fd-link", via_fd_link),
                 ("fd-path", via_fd_path), ("chain", via_chain), ("dirfd", via_dirfd),
                 ("deleted-fd", via_deleted_fd), ("fd-dir", via_cwd_fd_dir), ("loop", loop),
                 ("chroot", in_chroot)]:
    run(tag, how)
print("baseline", os.spawnv(os.P_WAIT, "/usr/bin/true", ["true"]))
'''
TAGS = ["thread-cwd", "cwd", "thread-self", "fd-link", "fd-path", "chain", "dirfd", "deleted-fd", "fd-dir"]


@pytest.mark.parametrize("ptrace", ["default", "0"])
@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_exec_paths_resolved_as_the_app_sees_them(
    sandbox: Sandbox, mode3: str, effect: str, ptrace: str
) -> None:
    py, _ = unpriv_python()
    sandbox.write("attack.py", ATTACKS, mode=0o644)
    pol = rule(processes={"effect": effect, "drift_prevention": True, "deny": ["/usr/bin/printf"]})
    env = {"DEFENDER_PTRACE": ptrace} if ptrace != "default" else {}
    r = sandbox.run(pol, [py, "attack.py"], mode=mode3, env=env, timeout=90)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "baseline 0" in out, out
    found: dict[str, str] = {}
    for tag, err in re.findall(r"^([\w-]+) errno (\w+)$", out, re.M):  # (a thread reports its own)
        if err != "none" or tag not in found:
            found[tag] = err
    pwned = set(re.findall(r"PWNED-([\w-]+)", out))
    hits = [
        a for a in r.audits if a["type"] in ("drift", "process") and a["control"].startswith("processes.")
    ]
    assert all(a["effect"] == effect for a in hits)
    chroot = mode3 == "root"
    tags = [*TAGS, "chroot", "mntns"] if chroot else TAGS
    for tag in tags:
        if effect == "prevent":
            refused = found.get(tag) == "13" or (tag == "mntns" and "mntns mount-refused" in out)
            assert refused and tag not in pwned, f"{tag}: {out}"
        elif tag != "chroot":  # (no loader inside the jail: it ran into ENOENT after the check)
            assert tag in pwned, f"{tag}: {out}"
    assert found.get("loop") in ("40", "13") and "loop" not in pwned
    # the audits name the real file, found through the app's own /proc/self
    exes = [a["exe"] for a in hits]
    assert sum(1 for e in exes if e.startswith(str(sandbox.app / "dropped"))) >= 4, exes
    assert sum(1 for e in exes if e.startswith(str(sandbox.app / "sub" / "payload"))) >= 2, exes
    assert any(e.endswith("/gone (deleted)") for e in exes), exes
    if mode3 != "garden":  # (Garden's profile refuses unshare: the thread has no cwd of its own there)
        assert str(sandbox.app / "sub2" / "payload2") in exes, exes
    assert any(e == "/usr/bin/printf" for e in exes), exes
    if chroot:
        assert any(e.endswith("/jail/usr/bin/true") for e in exes), exes
        if "mount-refused" not in out:
            # the app's /usr/bin/true is the bound file: drift, though the path is a system one
            assert [a for a in hits if a["exe"] == "/usr/bin/true" and a["type"] == "drift"], hits


SCRIPTS = r"""
import os, subprocess
for name in ("direct.sh", "chained.sh"):
    try:
        out = subprocess.run(["./" + name], capture_output=True, text=True).stdout
        print(name, "ran", out.strip(), flush=True)
    except PermissionError as e:
        print(name, "refused", e.errno, flush=True)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_script_interpreter_is_decided_before_it_runs(sandbox: Sandbox, mode3: str, effect: str) -> None:
    """A `#!` script makes the kernel start its interpreter with no exec call of its own: the
    pre-check decides on the interpreter too (a chain of scripts as deep as the kernel follows)."""
    py, _ = unpriv_python()
    sandbox.write("direct.sh", "#!/usr/bin/printf PWNED-direct\n")
    sandbox.write("inner.sh", "#!/usr/bin/printf PWNED-chained\n")
    sandbox.write("chained.sh", f"#!{sandbox.app}/inner.sh\n")
    sandbox.write("app.py", SCRIPTS, mode=0o644)
    pol = rule(processes={"effect": effect, "deny": ["/usr/bin/printf"]})
    r = sandbox.run(pol, [py, "app.py"], mode=mode3, env={"DEFENDER_PTRACE": "0"})
    assert r.returncode == 0, r.stderr
    hits = r.of("process", "processes.deny")
    for name, script in (("direct.sh", "direct.sh"), ("chained.sh", "inner.sh")):
        want = f"{name} refused 13" if effect == "prevent" else f"{name} ran PWNED-"
        assert want in r.stdout, r.stdout
        assert [a for a in hits if a["exe"] == "/usr/bin/printf" and a["extra"]["script"].endswith(script)]
    assert all(a["effect"] == effect for a in hits) and len(hits) >= 2
