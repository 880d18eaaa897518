"""Launch, exit status, signals, orphans, bad input."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.defender.helpers import ALLOW_ALL, NOBODY, Sandbox, rule


def test_exit_status_propagates(sandbox: Sandbox, mode: str) -> None:
    r = sandbox.run(ALLOW_ALL, ["/bin/sh", "-c", "echo hello; exit 7"], garden=mode == "garden")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hello\n"
    started = r.of("defender", "startup")
    assert started and started[0]["exe"] == "/bin/sh"


def test_killed_by_signal_is_128_plus_n(sandbox: Sandbox) -> None:
    r = sandbox.run(ALLOW_ALL, ["/bin/sh", "-c", "kill -KILL $$"])
    assert r.returncode == 128 + 9


def test_runs_unprivileged_app_is_not_root(sandbox: Sandbox) -> None:
    r = sandbox.run(ALLOW_ALL, ["/usr/bin/id", "-u"])
    assert r.returncode == 0 and r.stdout.strip() == str(NOBODY) != "0"


def test_unknown_program_is_127(sandbox: Sandbox) -> None:
    r = sandbox.run(ALLOW_ALL, ["no-such-program-xyz"])
    assert r.returncode == 127
    assert "program not found: no-such-program-xyz" in r.stderr


def test_no_program_is_usage_error(sandbox: Sandbox) -> None:
    r = sandbox.run(ALLOW_ALL, [])
    assert r.returncode == 64 and "no program given" in r.stderr


def test_bad_policy_file_is_config_error(sandbox: Sandbox) -> None:
    r = sandbox.run({"rules": [{"name": "x", "processes": {"effect": "sometimes"}}]}, ["/bin/true"])
    assert r.returncode == 78 and "is invalid" in r.stderr


def test_missing_install_bundle_refuses_to_start(sandbox: Sandbox) -> None:
    r = sandbox.run(None, ["/bin/true"])
    assert r.returncode == 78 and "INSTALL_BUNDLE is not set" in r.stderr


def test_garbled_install_bundle_refuses_to_start(sandbox: Sandbox) -> None:
    r = sandbox.run(None, ["/bin/true"], env={"INSTALL_BUNDLE": "@@not-base64@@"})
    assert r.returncode == 78 and "INSTALL_BUNDLE" in r.stderr


def test_policy_refusing_the_app_itself_is_126(sandbox: Sandbox) -> None:
    pol = rule(processes={"effect": "prevent", "deny": ["/bin/sleep", "/usr/bin/sleep"]})
    r = sandbox.run(pol, ["sleep", "5"])
    assert r.returncode == 126, r.stderr
    assert "cannot start sleep" in r.stderr
    assert r.of("process", "processes.deny")


def test_signals_are_forwarded(sandbox: Sandbox) -> None:
    from tests.defender.helpers import defender_command, unpriv_python

    sandbox.write(
        "trap.sh", "#!/bin/sh\ntrap 'echo got-term; exit 42' TERM\necho ready\nwhile :; do sleep 0.05; done\n"
    )
    _, env = unpriv_python()
    p = subprocess.Popen(
        defender_command(["--policy", str(_pol(sandbox)), "./trap.sh"]),
        cwd=sandbox.app,
        env={"PATH": "/usr/bin:/bin", "DATA_FOLDER": str(sandbox.data), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 42, err
    assert "got-term" in out


def test_orphans_are_reaped_and_do_not_outlive_the_app(sandbox: Sandbox) -> None:
    marker = f"300.{time.time_ns() % 10**9}"
    r = sandbox.run(ALLOW_ALL, ["/bin/sh", "-c", f"sleep {marker} & (sleep {marker} &) ; sleep 0.2; exit 0"])
    assert r.returncode == 0
    time.sleep(0.2)
    ps = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""


def _pol(sandbox: Sandbox) -> object:
    import json

    p = sandbox.root / "allow.json"
    p.write_text(json.dumps(ALLOW_ALL))
    return p


FAIL_CLOSED_APP = """
import os, sys, time
out = sys.argv[1]
pid = os.fork()
if pid == 0:  # a grandchild of the defender: not its direct child
    for _ in range(400):
        try:
            child = os.fork()
        except OSError as e:
            with open(out + ".tmp", "w") as f:  # renamed into place: the test never reads it half-written
                f.write(f"fork-errno {e.errno}")
            os.rename(out + ".tmp", out)
            os._exit(0)
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        time.sleep(0.05)
    os._exit(0)
print("ready", pid, flush=True)
time.sleep(300)
"""


def test_supervisor_death_fails_closed(sandbox: Sandbox, mode: str) -> None:
    """SIGKILL the defender: the app dies (PDEATHSIG; with the ptrace exec stop the whole tree dies,
    EXITKILL); a surviving descendant cannot fork/exec/connect any more (ENOSYS)."""
    from tests.defender.helpers import defender_command, unpriv_python

    py, env = unpriv_python()
    sandbox.write("app.py", FAIL_CLOSED_APP, mode=0o644)
    out = sandbox.data / "grandchild.txt"
    p = subprocess.Popen(
        defender_command(["--policy", str(_pol(sandbox)), py, "app.py", str(out)], garden=mode == "garden"),
        cwd=sandbox.app,
        env={"PATH": "/usr/bin:/bin", "DATA_FOLDER": str(sandbox.data), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    words = p.stdout.readline().split()
    assert words[0] == "ready", p.stderr.read() if p.stderr else ""
    grandchild = int(words[1])
    p.kill()  # SIGKILL: no clean-up code runs in the defender
    p.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        gone = not _alive(grandchild)
        if gone or out.exists():
            break
        time.sleep(0.05)
    if _alive(grandchild) and not out.exists():
        raise AssertionError("a descendant kept running with working fork after the supervisor died")
    if out.exists():
        assert out.read_text() == "fork-errno 38"  # ENOSYS: the trapped syscall has no supervisor


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_no_enforcement_refuses_unless_fail_open(sandbox: Sandbox) -> None:
    env = {"GARDENLIKE_ALSO_BLOCK": "seccomp"}
    r = sandbox.run(ALLOW_ALL, ["/bin/echo", "app-ran"], garden=True, env=env)
    assert r.returncode == 125 and "cannot enforce" in r.stderr
    assert "app-ran" not in r.stdout
    r = sandbox.run(rule(fail_open=True), ["/bin/echo", "app-ran"], garden=True, env=env)
    assert r.returncode == 0 and "app-ran" in r.stdout
    assert "UNPROTECTED" in r.stderr


def test_app_does_not_inherit_the_enrolment_bundle(sandbox: Sandbox) -> None:
    r = sandbox.run(
        ALLOW_ALL,
        ["/bin/sh", "-c", 'echo "bundle=${INSTALL_BUNDLE:-none} data=$DATA_FOLDER"'],
        env={"INSTALL_BUNDLE": "secret"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("bundle=none data=/")
