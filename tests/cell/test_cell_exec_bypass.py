"""Code run without an execve of its own file, inside real runc containers: the dynamic loader run
directly on a dropped program (`ld.so /tmp/dropped`), memfd executables, programs on the container's
other mounts — refused by the cell defender from outside the containers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from garrison.kernel import exec_watch
from garrison.policy.model import RuntimePolicy
from tests.cell.conftest import LOADER, started_app

MFD_EXEC = 0x10


def _policy(effect: str = "prevent") -> RuntimePolicy:
    return RuntimePolicy.model_validate({"rules": [
        {"name": "cell-rule", "processes": {"effect": effect, "deny": ["wget"], "drift_prevention": True}},
    ]})


@pytest.fixture(scope="session")
def memexec(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The suite's attacker helper (tests/cell/memexec.c), static so it runs on the busybox image."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (scripts/bootstrap installs it)")
    out = tmp_path_factory.mktemp("memexec") / "memexec"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(Path(__file__).with_name("memexec.c"))],
                   check=True, capture_output=True)
    return out.read_bytes()


def _app(garden: Any, audits: Any, memexec: bytes | None = None) -> Any:
    """The app started; with `memexec` shipped in its droplet (baseline: a compromised app's own code)."""
    return started_app(garden, audits, {"/home/vcap/app/bin/memexec": memexec} if memexec else None)


def test_loader_run_directly_on_a_dropped_program_refused(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy())
    c = _app(garden, audits)
    ok = c.exec("/bin/dyn-true")  # a dynamic program: its interpreter is paired with its exec
    assert ok.returncode == 0, ok.stderr
    assert c.exec("/bin/cp", "/bin/dyn-true", "/tmp/dropped").returncode == 0
    for argv in ([LOADER, "/tmp/dropped"],
                 ["/bin/sh", "-c", f"exec {LOADER} --library-path /lib/x86_64-linux-gnu /tmp/dropped"],
                 ["/bin/sh", "-c", f"cd /tmp && exec {LOADER} ./dropped"]):
        r = c.exec(*argv)
        assert r.returncode != 0 and "not permitted" in r.stderr.lower(), (argv, r)
    ev = audits.wait(lambda e: e.type == "drift" and e.exe == "/tmp/dropped")
    assert ev.effect == "prevent" and ev.extra["loader"] == LOADER and ev.extra["argv"] == [LOADER, "/tmp/dropped"]
    assert "dynamic loader" in ev.message and ev.app_name == "shop"
    audits.wait(lambda e: e.type == "drift" and e.exe == "./dropped")
    # a denied program through the loader is denied as itself
    assert c.exec(LOADER, "/bin/wget").returncode != 0
    audits.wait(lambda e: e.control == "processes.deny" and e.exe == "/bin/wget" and "loader" in e.extra)
    # the loader under another name is a new file: drift as any
    assert c.exec("/bin/cp", LOADER, "/tmp/myld").returncode == 0
    assert c.exec("/tmp/myld", "/tmp/dropped").returncode != 0


def test_loader_after_a_failed_exec_of_the_same_thread_is_not_an_interpreter(
        garden: Any, defender: Any, memexec: bytes) -> None:
    """execve of a baseline program that fails after the kernel opened it (E2BIG), then the loader
    from the same thread: not the program's interpreter, refused."""
    _d, audits = defender(_policy())
    c = _app(garden, audits, memexec)
    assert c.exec("/bin/cp", "/bin/dyn-true", "/tmp/dropped").returncode == 0
    r = c.exec("/home/vcap/app/bin/memexec", "e2big", "/bin/dyn-true", LOADER, "/tmp/dropped")
    assert "first execve: Argument list too long" in r.stdout, r
    assert "loader execve: Operation not permitted" in r.stdout, r
    audits.wait(lambda e: e.type == "drift" and e.exe == "/tmp/dropped")


def _watched() -> None:
    """The kernel's exec watch (BPF tracepoints and kprobes): skipped only where this kernel cannot load
    it (the object itself is built by scripts/bootstrap --test: missing is a failure)."""
    assert exec_watch.object_built(), "garrison/kernel/exec_watch.bpf.o not built (scripts/bootstrap builds it)"
    why = exec_watch.unavailable()
    if why is not None:
        pytest.skip(why)


def test_memfd_exec_refused_in_the_kernel(garden: Any, defender: Any, memexec: bytes) -> None:
    _watched()
    _d, audits = defender(_policy())
    c = _app(garden, audits, memexec)
    audits.wait(lambda e: e.control == "cell.exec_watch" and e.message.startswith("code run without an exec seen"))
    for payload in ("/bin/true", "/bin/dyn-true"):  # static and dynamic
        plain = c.exec("/home/vcap/app/bin/memexec", "memfd", "0", payload)
        assert plain.returncode != 0 and "fexecve: Permission denied" in plain.stdout, plain
        asked = c.exec("/home/vcap/app/bin/memexec", "memfd", str(MFD_EXEC), payload)
        assert asked.returncode == 3 and "memfd_create: Permission denied" in asked.stdout, asked
    # the refusal of MFD_EXEC is audited with the container's app (the kernel only logs a cell-wide pid)
    ev = audits.wait(lambda e: e.type == "drift" and "MFD_EXEC" in e.message)
    assert ev.effect == "prevent" and ev.exe == "/memfd:payload" and ev.app_name
    assert ev.extra["container"] == c.id and "memexec" in ev.message
    pid = c.exec("/bin/sh", "-c", "echo $$")  # the container cannot lower it: /proc/sys is read-only
    assert pid.returncode == 0
    low = c.exec("/bin/sh", "-c", "echo 0 > /proc/sys/vm/memfd_noexec")
    assert low.returncode != 0
    assert c.exec("/bin/cat", "/proc/sys/vm/memfd_noexec").stdout.strip() == "2"


def test_memfd_exec_of_a_dynamic_program_seen_in_alert_mode(garden: Any, defender: Any, memexec: bytes) -> None:
    _d, audits = defender(_policy("alert"))
    c = _app(garden, audits, memexec)
    r = c.exec("/home/vcap/app/bin/memexec", "memfd", "0", "/bin/dyn-true")
    assert r.returncode == 0, r  # alert: it ran
    ev = audits.wait(lambda e: e.type == "drift" and "memfd:payload" in (e.exe or ""))
    assert ev.effect == "alert" and ev.extra["loader"] == LOADER


def test_static_memfd_program_seen_in_alert_mode(garden: Any, defender: Any, memexec: bytes) -> None:
    """No interpreter to pair, nothing on a marked mount: only the kernel's exec tracepoint sees it."""
    _watched()
    _d, audits = defender(_policy("alert"))
    c = _app(garden, audits, memexec)
    r = c.exec("/home/vcap/app/bin/memexec", "memfd", "0", "/bin/true")
    assert r.returncode == 0, r  # alert: it ran
    ev = audits.wait(lambda e: e.type == "drift" and e.exe == "/memfd:payload")
    assert ev.effect == "alert" and ev.extra["layer"] == "memfd" and ev.app_name
    assert ev.extra["container"] == c.id


def test_exec_watch_off_by_option_said_at_start(garden: Any, defender: Any) -> None:
    _d, audits = defender(_policy(), exec_watch=False)
    ev = audits.wait(lambda e: e.control == "cell.exec_watch")
    assert "not seen from the kernel: off (as chosen)" in ev.message and ev.severity == "medium"


EVIL = """
#include <unistd.h>
__attribute__((constructor)) static void evil(void) { write(1, "evil ran\\n", 9); }
"""


@pytest.fixture(scope="session")
def evil_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A library whose constructor says it ran (what LD_PRELOAD of a dropped library would do)."""
    d = tmp_path_factory.mktemp("evil")
    (d / "evil.c").write_text(EVIL)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(d / "evil.so"), str(d / "evil.c")],
                   check=True, capture_output=True)
    return (d / "evil.so").read_bytes()


def _preload(c: Any, lib: str) -> subprocess.CompletedProcess[str]:
    return c.exec("/bin/sh", "-c", f"LD_PRELOAD={lib} /bin/dyn-true; echo rc=$?")


def test_dropped_library_mapped_executable_killed_before_it_runs(
        garden: Any, defender: Any, memexec: bytes, evil_so: bytes) -> None:
    _watched()
    _d, audits = defender(_policy())
    c = started_app(garden, audits, {"/home/vcap/app/bin/memexec": memexec, "/home/vcap/app/lib/own.so": evil_so})
    assert "rc=0" in _preload(c, "/home/vcap/app/lib/own.so").stdout  # the droplet's own library: baseline
    assert c.exec("/bin/dyn-true").returncode == 0  # the image's libraries
    c.stream_in("/tmp/evil.so", evil_so, 0o644)  # dropped after the app started
    r = _preload(c, "/tmp/evil.so")
    assert "rc=137" in r.stdout and "evil ran" not in r.stdout, r  # SIGKILL inside the mmap, nothing of it ran
    ev = audits.wait(lambda e: e.type == "drift" and (e.exe or "").endswith("tmp/evil.so"))
    assert ev.effect == "prevent" and ev.extra["layer"] == "mapped" and ev.app_name and ev.extra["container"] == c.id
    r = c.exec("/home/vcap/app/bin/memexec", "map", "/tmp/evil.so")  # mapped by a program of its own
    assert r.returncode != 0 and "mapped" not in r.stdout, r
    # the droplet's library rewritten in place through a shared mapping (no write(), no modify event)
    assert c.exec("/home/vcap/app/bin/memexec", "poke", "/home/vcap/app/lib/own.so").stdout.strip() == "poked"
    r = _preload(c, "/home/vcap/app/lib/own.so")
    assert "rc=137" in r.stdout and "evil ran" not in r.stdout, r


def test_dropped_library_mapped_executable_reported_in_alert_mode(
        garden: Any, defender: Any, evil_so: bytes) -> None:
    _watched()
    _d, audits = defender(_policy("alert"))
    c = _app(garden, audits)
    c.stream_in("/tmp/evil.so", evil_so, 0o644)
    r = _preload(c, "/tmp/evil.so")
    assert "rc=0" in r.stdout and "evil ran" in r.stdout, r  # alert: it ran
    ev = audits.wait(lambda e: e.type == "drift" and (e.exe or "").endswith("tmp/evil.so"))
    assert ev.effect == "alert" and ev.extra["mapped_by"]


def test_program_on_another_mount_of_the_container_gated(garden: Any, defender: Any) -> None:
    """/dev is a writable tmpfs in the container (not the overlay): a program dropped there is drift."""
    _d, audits = defender(_policy())
    c = _app(garden, audits)
    assert c.exec("/bin/cp", "/bin/ls", "/dev/dropped").returncode == 0
    r = c.exec("/dev/dropped")
    assert r.returncode != 0 and "not permitted" in r.stderr.lower(), r
    ev = audits.wait(lambda e: e.type == "drift" and e.exe == "/dev/dropped")
    assert ev.extra["layer"] == "mount-new"
    assert c.exec("/bin/cp", "/bin/dyn-true", "/dev/dyn").returncode == 0
    assert c.exec(LOADER, "/dev/dyn").returncode != 0


def test_container_in_the_cell_pid_namespace_leaves_the_cell_memfd_setting_alone(garden: Any, defender: Any) -> None:
    sysctl = Path("/proc/sys/vm/memfd_noexec")
    before = sysctl.read_text()
    _d, audits = defender(_policy())
    c = garden(app="hostpid", host_pid=True, privileged=True)
    c.run_app("while true; do sleep 1; done")
    ev = audits.wait(lambda e: e.control == "cell.container_unprotected" and "memfd" in e.message)
    assert "PID namespace" in ev.message
    assert sysctl.read_text() == before
