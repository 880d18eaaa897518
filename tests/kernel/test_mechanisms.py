"""The kernel mechanisms the defender relies on, measured on this kernel (DESIGN.md facts), each in a
child process so the test runner itself stays unfiltered. No console, no policy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from garrison.kernel import features, landlock


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


PRELUDE = """
import ctypes, errno, os, signal, threading
from garrison.kernel import prctl, seccomp
libc = ctypes.CDLL(None, use_errno=True)
"""


def test_probe_reports_this_kernel() -> None:
    f = features.probe()
    assert f.arch == "x86_64"
    assert f.seccomp_user_notif, "seccomp user notification is required by the defender"
    assert isinstance(f.weaker_guarantees(), list)


def test_errno_rules_and_dumpable_fake() -> None:
    r = run_child(
        PRELUDE
        + """
spec = seccomp.FilterSpec(errno={"clone3": errno.ENOSYS, "io_uring_setup": errno.EPERM},
                          errno_if=[("prctl", [seccomp.ArgEq(0, 4), seccomp.ArgEq(1, 0)], 0)])
prctl.set_no_new_privs()
seccomp.install_filter(seccomp.build_filter(spec), listener=False)
print(libc.syscall(435, 0, 0), ctypes.get_errno())
print(libc.syscall(425, 1, 0), ctypes.get_errno())
print(libc.prctl(4, 0, 0, 0, 0), libc.prctl(3, 0, 0, 0, 0))
print(libc.prctl(4, 1, 0, 0, 0), libc.prctl(3, 0, 0, 0, 0))
"""
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["-1 38", "-1 1", "0 1", "0 1"]


def test_x32_syscall_is_killed() -> None:
    r = run_child(
        PRELUDE
        + """
prctl.set_no_new_privs()
seccomp.install_filter(seccomp.build_filter(seccomp.FilterSpec()), listener=False)
print("alive", flush=True)
libc.syscall(0x40000000 | 39)
print("survived")
"""
    )
    assert r.stdout == "alive\n" and r.returncode == -signal_sys()


def signal_sys() -> int:
    import signal

    return int(signal.SIGSYS)


def test_second_listener_is_ebusy_and_dead_supervisor_fails_closed() -> None:
    r = run_child(
        PRELUDE
        + """
prog = seccomp.build_filter(seccomp.FilterSpec(notify={"getppid"}))
prctl.set_no_new_privs()
fd, killable = seccomp.install_listener(prog)
try:
    seccomp.install_listener(prog)
    print("second ok")
except OSError as e:
    print("second", errno.errorcode[e.errno])
os.close(fd)  # the supervisor is gone: trapped syscalls fail, they do not run
print("getppid", libc.syscall(110), errno.errorcode[ctypes.get_errno()])
"""
    )
    assert r.returncode == 0, r.stderr
    assert "second EBUSY" in r.stdout
    assert "getppid -1 ENOSYS" in r.stdout


def test_notify_continue_error_and_id_valid() -> None:
    r = run_child(
        PRELUDE
        + """
prog = seccomp.build_filter(seccomp.FilterSpec(notify={"getppid", "getuid"}))
out = {}
def restricted():
    prctl.set_no_new_privs()
    fd, _ = seccomp.install_listener(prog)
    out["fd"] = fd
    ready.set(); go.wait()
    out["ppid"] = libc.syscall(110)
    out["uid"] = (libc.syscall(102), ctypes.get_errno())
ready, go = threading.Event(), threading.Event()
t = threading.Thread(target=restricted); t.start(); ready.wait()
fd = out["fd"]; buf = seccomp.SeccompNotif()
go.set()
seccomp.notif_recv(fd, buf)
print("nr", buf.data.nr, seccomp.notif_id_valid(fd, buf.id))
seccomp.notif_send(fd, buf.id, cont=True)
print("valid after reply", seccomp.notif_id_valid(fd, buf.id))
seccomp.notif_recv(fd, buf)
seccomp.notif_send(fd, buf.id, error=errno.EACCES)
t.join()
print("ppid", out["ppid"] == os.getppid(), "uid", out["uid"])
"""
    )
    assert r.returncode == 0, r.stderr
    assert "nr 110 True" in r.stdout
    assert "valid after reply False" in r.stdout
    assert "ppid True uid (-1, 13)" in r.stdout


def test_landlock_exec_allow_set_refuses_replaced_files(tmp_path: object) -> None:
    if landlock.abi_version() == 0:
        pytest.skip("Landlock unavailable on this kernel")
    r = run_child(
        PRELUDE
        + """
import shutil, subprocess, tempfile
from garrison.kernel import landlock
d = tempfile.mkdtemp()
shutil.copy("/bin/true", d + "/old")
landlock.restrict_exec(["/usr", "/bin", "/lib", "/lib64"], [d + "/old"])
print("old", subprocess.run([d + "/old"]).returncode)
shutil.copy("/bin/true", d + "/new")
try:
    subprocess.run([d + "/new"]); print("new ran")
except PermissionError:
    print("new refused")
os.unlink(d + "/old"); shutil.copy("/bin/true", d + "/old")  # replaced: new inode
try:
    subprocess.run([d + "/old"]); print("replaced ran")
except PermissionError:
    print("replaced refused")
shutil.rmtree(d)
"""
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["old", "0", "new", "refused", "replaced", "refused"]


def test_memread_falls_back_to_proc_mem() -> None:
    r = run_child(
        """
import ctypes, os
from garrison.kernel import procmem
buf = ctypes.create_string_buffer(b"hello garrison")
procmem._vm_readv_ok = False  # as under Garden
m = procmem.MemReader(os.getpid())
print(m.read_cstring(ctypes.addressof(buf)).decode())
print(len(m.read_chunked(0, 16)))  # unmapped: short, no exception
"""
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["hello garrison", "0"]


def test_process_vm_readv_never_sees_garbage_flags() -> None:
    """Its flags are syscall(2)'s 7th argument, read from the stack as a long: passed as a plain int
    it once left the upper half undefined and ~1 call in 150,000 failed with EINVAL (an exec check
    then read nothing). Statistical by nature: three threads, 150,000 reads, none may fail."""
    import ctypes
    import os
    import threading

    from garrison.kernel.procmem import vm_readv

    buf = ctypes.create_string_buffer(b"garrison" * 8)
    failures: list[OSError] = []

    def reads() -> None:
        for _ in range(50_000):
            try:
                assert vm_readv(os.getpid(), ctypes.addressof(buf), 16) == b"garrison" * 2
            except OSError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=reads) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
