"""Process controls on real processes: for each, a benign case, alert (runs, audited) and prevent
(refused, audited) — natively and under a Garden-like seccomp profile."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from tests.defender.helpers import ALLOW_ALL, NOBODY, Sandbox, rule, unpriv_python


def py_app(sandbox: Sandbox, name: str, body: str) -> list[str]:
    py, _env = unpriv_python()
    sandbox.write(name, textwrap.dedent(body), mode=0o644)
    return [py, name]


SHELL_APP = """
import subprocess, sys
try:
    out = subprocess.run(["/bin/sh", "-c", "echo pwned"], capture_output=True, text=True)
    print("shell-ran", out.stdout.strip())
except PermissionError as e:
    print("shell-refused", e.errno)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_shell_spawned_by_app(sandbox: Sandbox, mode: str, effect: str) -> None:
    argv = py_app(sandbox, "app.py", SHELL_APP)
    pol = rule(processes={"effect": effect, "deny": ["/bin/sh"]})  # named path; the file is dash
    r = sandbox.run(pol, argv, garden=mode == "garden")
    assert r.returncode == 0, r.stderr
    hits = r.of("process", "processes.deny")
    assert hits and hits[0]["effect"] == effect
    assert hits[0]["argv"][:2] == ["/bin/sh", "-c"] and hits[0]["ppid"]
    if effect == "prevent":
        assert "shell-refused 13" in r.stdout
    else:
        assert "shell-ran pwned" in r.stdout


def test_benign_exec_passes_allow_list(sandbox: Sandbox, mode: str) -> None:
    argv = py_app(sandbox, "app.py", SHELL_APP)
    pol = rule(processes={"effect": "prevent", "allow": ["python3*", "sh", "dash"]})
    r = sandbox.run(pol, argv, garden=mode == "garden")
    assert "shell-ran pwned" in r.stdout, r.stderr
    assert not r.of("process")


def test_argv_pattern_deny(sandbox: Sandbox) -> None:
    argv = py_app(
        sandbox,
        "app.py",
        """
        import subprocess
        print(subprocess.run(["/bin/echo", "safe"]).returncode)
        try:
            subprocess.run(["/bin/echo", "--dangerous"])
        except PermissionError:
            print("refused")
        """,
    )
    pol = rule(processes={"effect": "prevent", "deny": [{"path": "*/echo", "args": "--dang"}]})
    r = sandbox.run(pol, argv)
    assert "safe\n0\nrefused" in r.stdout, r.stderr


DRIFT_APP = """
import os, shutil, subprocess
shutil.copy("/bin/true", "downloaded")  # a binary written after start
os.chmod("downloaded", 0o755)
try:
    print("drift-ran", subprocess.run(["./downloaded"]).returncode)
except PermissionError as e:
    print("drift-refused", e.errno)
print("baseline", subprocess.run(["./tool.sh"]).returncode)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_drift_downloaded_binary(sandbox: Sandbox, mode: str, effect: str) -> None:
    sandbox.write("tool.sh", "#!/bin/sh\nexit 0\n")
    argv = py_app(sandbox, "app.py", DRIFT_APP)
    pol = rule(processes={"effect": effect, "drift_prevention": True})
    r = sandbox.run(pol, argv, garden=mode == "garden")
    assert r.returncode == 0, r.stderr
    assert "baseline 0" in r.stdout  # files present at start keep working
    hits = r.of("drift", "processes.drift_prevention")
    assert hits and hits[0]["exe"].endswith("/downloaded") and hits[0]["effect"] == effect
    assert ("drift-refused 13" if effect == "prevent" else "drift-ran 0") in r.stdout


def test_drift_modified_in_place(sandbox: Sandbox) -> None:
    sandbox.write("tool.sh", "#!/bin/sh\nexit 0\n")
    argv = py_app(
        sandbox,
        "app.py",
        """
        import subprocess
        with open("tool.sh", "a") as f:
            f.write("echo changed\\n")
        try:
            subprocess.run(["./tool.sh"])
            print("ran")
        except PermissionError:
            print("refused")
        """,
    )
    r = sandbox.run(rule(processes={"effect": "prevent", "drift_prevention": True}), argv)
    assert "refused" in r.stdout, r.stderr + r.stdout


MEMFD_APP = """
import os
fd = os.memfd_create("payload", 0)
with open("/bin/true", "rb") as f:
    os.write(fd, f.read())
pid = os.fork()
if pid == 0:
    try:
        os.execve(fd, ["payload"], {})
    except OSError as e:
        os._exit(100 + e.errno)
_, st = os.waitpid(pid, 0)
print("memfd-exec", os.waitstatus_to_exitcode(st))
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_memfd_exec(sandbox: Sandbox, mode: str, effect: str) -> None:
    argv = py_app(sandbox, "app.py", MEMFD_APP)
    r = sandbox.run(
        rule(processes={"effect": effect, "drift_prevention": True}), argv, garden=mode == "garden"
    )
    assert r.returncode == 0, r.stderr
    hits = r.of("drift")
    assert hits and hits[0]["exe"].startswith("/memfd:payload") and hits[0]["extra"]["memfd"]
    assert ("memfd-exec 113" if effect == "prevent" else "memfd-exec 0") in r.stdout


LDSO_APP = """
import glob, os, shutil, subprocess
shutil.copy("/bin/true", "x")  # not executable: only the loader can run it
loader = sorted(glob.glob("/lib64/ld-linux-x86-64.so.*"))[0]
try:
    print("ldso-ran", subprocess.run([loader, "./x"]).returncode)
except PermissionError as e:
    print("ldso-refused", e.errno)
print("ldso-benign", subprocess.run([loader, "/bin/true"]).returncode)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_ld_so_runs_new_file(sandbox: Sandbox, mode: str, effect: str) -> None:
    argv = py_app(sandbox, "app.py", LDSO_APP)
    r = sandbox.run(
        rule(processes={"effect": effect, "drift_prevention": True}), argv, garden=mode == "garden"
    )
    assert r.returncode == 0, r.stderr
    assert "ldso-benign 0" in r.stdout
    hits = r.of("drift")
    assert hits and hits[0]["exe"].endswith("/x") and hits[0]["extra"]["loader"]
    assert ("ldso-refused 13" if effect == "prevent" else "ldso-ran 0") in r.stdout


def test_ld_so_deny_list_applies_to_the_loaded_program(sandbox: Sandbox) -> None:
    argv = py_app(
        sandbox,
        "app.py",
        """
        import glob, subprocess
        loader = sorted(glob.glob("/lib64/ld-linux-x86-64.so.*"))[0]
        try:
            subprocess.run([loader, "--library-path", "/lib", "/bin/sh", "-c", "true"])
            print("ran")
        except PermissionError:
            print("refused")
        """,
    )
    r = sandbox.run(
        rule(processes={"effect": "prevent", "deny": ["/usr/bin/dash", "/bin/sh", "/usr/bin/sh"]}), argv
    )
    assert "refused" in r.stdout, r.stderr


BYPASS_APP = """
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 8, params)
print("io_uring", r, ctypes.get_errno())
r = libc.syscall(101, 16, os.getppid(), 0, 0)  # PTRACE_ATTACH the parent
print("ptrace", r, ctypes.get_errno())
r = libc.syscall(435, 0, 0)  # clone3
print("clone3", r, ctypes.get_errno())
r = libc.syscall(311, os.getppid(), 0, 0, 0, 0, 0)  # process_vm_writev into the parent
print("process_vm_writev", r, ctypes.get_errno())
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3
print("dumpable-set", libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "now", libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("fork ok")
"""


def test_bypasses_closed(sandbox: Sandbox, mode: str) -> None:
    argv = py_app(sandbox, "app.py", BYPASS_APP)
    r = sandbox.run(ALLOW_ALL, argv, garden=mode == "garden")
    assert r.returncode == 0, r.stderr
    assert "io_uring -1 1" in r.stdout
    assert "ptrace -1 1" in r.stdout
    assert "clone3 -1 38" in r.stdout
    assert "process_vm_writev -1 1" in r.stdout  # ENOSYS: libc falls back to clone, whose flags we can see
    assert "dumpable-set 0 now 1" in r.stdout  # faked: we keep read access to its memory
    assert "fork ok" in r.stdout
    if mode == "native":  # under Garden its own filter's EPERM wins before ours: nothing to audit
        assert r.of("kernel", "kernel.io_uring")
        assert r.of("process", "kernel.process_vm_writev")
    assert r.of("process", "kernel.ptrace")


def test_x32_abi_is_killed(sandbox: Sandbox) -> None:
    argv = py_app(
        sandbox,
        "app.py",
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("before", flush=True)
        libc.syscall(0x40000000 | 39)  # x32 getpid
        print("after")
        """,
    )
    r = sandbox.run(ALLOW_ALL, argv)
    assert "before" in r.stdout and "after" not in r.stdout
    assert r.returncode == 128 + 31  # SIGSYS


FORK_BOMB = """
import os, time
kids, refused = [], 0
for i in range(400):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
print("forked", len(kids), "refused", refused, flush=True)
for k in kids:
    os.kill(k, 9)
for k in kids:
    os.waitpid(k, 0)
"""


@pytest.mark.parametrize("effect", ["alert", "prevent"])
def test_fork_bomb_guard(sandbox: Sandbox, effect: str) -> None:
    argv = py_app(sandbox, "app.py", FORK_BOMB)
    pol = rule(processes={"effect": effect, "fork_bomb_guard": {"max_procs": 40, "max_forks_per_s": 60}})
    r = sandbox.run(pol, argv, timeout=120)
    assert r.returncode == 0, r.stderr
    hits = r.of("fork_bomb", "processes.fork_bomb_guard")
    assert hits and hits[0]["effect"] == effect
    forked = int(r.stdout.split()[1])
    if effect == "prevent":
        assert forked <= 100, r.stdout
    else:
        assert forked == 400, r.stdout


def test_allow_all_real_workloads(sandbox: Sandbox, mode: str) -> None:
    """Threads, posix_spawn, vfork (subprocess), a static binary and a web server keep working."""
    gcc = shutil.which("gcc")
    static = ""
    if gcc:
        src = sandbox.app / "s.c"
        src.write_text('#include <stdio.h>\nint main(void){puts("static-ok");return 0;}\n')
        import subprocess

        ok = subprocess.run(
            [gcc, "-static", "-O1", "-o", str(sandbox.app / "static"), str(src)], capture_output=True
        )
        if ok.returncode == 0:
            static = "./static"
    argv = py_app(
        sandbox,
        "app.py",
        f"""
        import os, subprocess, threading, http.server, urllib.request
        results = []
        def work(i):
            results.append(subprocess.run(["/bin/echo", str(i)], capture_output=True).returncode)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("threads", results.count(0))
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        print("posix_spawn", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        if {static!r}:
            print(subprocess.run([{static!r}], capture_output=True, text=True).stdout.strip())
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        body = urllib.request.urlopen(f"http://127.0.0.1:{{srv.server_address[1]}}/app.py").read()
        print("http", len(body) > 0)
        srv.shutdown()
        """,
    )
    r = sandbox.run(ALLOW_ALL, argv, garden=mode == "garden")
    assert r.returncode == 0, r.stderr
    assert "threads 16" in r.stdout and "posix_spawn 0" in r.stdout and "http True" in r.stdout
    if static:
        assert "static-ok" in r.stdout
    assert not [a for a in r.audits if a["type"] != "defender"]


def test_jvm_like_multithreaded_workload(sandbox: Sandbox) -> None:
    java = shutil.which("java")
    if not java:
        pytest.skip("no JVM on this machine")
    sandbox.write(
        "Main.java",
        textwrap.dedent(
            """
            public class Main {
              public static void main(String[] a) throws Exception {
                Thread[] ts = new Thread[32];
                final int[] sum = new int[1];
                for (int i = 0; i < ts.length; i++) {
                  ts[i] = new Thread(() -> { synchronized (sum) { sum[0]++; } });
                  ts[i].start();
                }
                for (Thread t : ts) t.join();
                Process p = new ProcessBuilder("/bin/true").start();
                System.out.println("jvm " + sum[0] + " " + p.waitFor());
              }
            }
            """
        ),
        mode=0o644,
    )
    r = sandbox.run(
        ALLOW_ALL,
        [java, "-Xshare:off", "-XX:TieredStopAtLevel=1", "Main.java"],
        timeout=180,
        env={"HOME": str(sandbox.app)},
    )
    assert r.returncode == 0, r.stderr
    assert "jvm 32 0" in r.stdout


def test_real_shell_fork_bomb_box_survives(sandbox: Sandbox) -> None:
    """The classic bomb, under prevent: RLIMIT_NPROC hard cap + fork-rate guard; the defender ends it
    when the app exits (orphans are killed until none is left)."""
    import os

    if os.getuid() != 0:
        pytest.skip("needs root to run the bomb as a throw-away unprivileged user")
    pol = rule(processes={"effect": "prevent", "fork_bomb_guard": {"max_procs": 30, "max_forks_per_s": 50}})
    r = sandbox.run(pol, ["/bin/sh", "-c", "b() { b | b & }; b; sleep 3; echo survived"], timeout=120)
    assert "survived" in r.stdout, r.stderr
    assert r.of("fork_bomb", "processes.fork_bomb_guard")
    import subprocess

    left = subprocess.run(["pgrep", "-u", str(NOBODY), "-f", "b | b"], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_unreadable_exec_path_gets_efault_not_a_hang(sandbox: Sandbox, mode: str) -> None:
    """execve() with a pointer the defender cannot read: the app gets EFAULT, as from the kernel."""
    argv = py_app(
        sandbox,
        "app.py",
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.execve(ctypes.c_void_p(0xdead0000), None, None)
        print("execve", rc, ctypes.get_errno())
        """,
    )
    pol = rule(processes={"effect": "prevent", "deny": ["/bin/nc*"], "drift_prevention": True})
    r = sandbox.run(pol, argv, garden=mode == "garden", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "execve -1 14" in r.stdout, r.stdout + r.stderr
