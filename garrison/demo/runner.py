"""Run the console and a protected sample app side by side until interrupted.

Everything is a real subprocess (the console exactly as `garrison console`, the app exactly as a CF start
command wrapped by `defender app-embedded`), so the demo exercises the same paths an operator's deployment does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from garrison.demo import sample_app

DEMO_APP = "garrison-sample"
DEMO_RULE = {
    "name": "garrison-demo",
    "scope": {"apps": [DEMO_APP]},
    "processes": {
        "effect": "prevent",
        "deny": ["sh", "bash", "dash", "nc", "ncat", "curl", "wget"],
        "drift_prevention": True,
        "fork_bomb_guard": {"max_procs": 256, "max_forks_per_s": 100},
    },
    "network": {
        "effect": "prevent",
        "outbound": {"deny": ["0.0.0.0/0:25", "169.254.169.254/32", "[::/0]:25"]},
        "port_scan": {"threshold": 30, "window_s": 10},
    },
    "dns": {"effect": "prevent", "deny": ["*.evil.example"]},
    "cnaf": {"effects": {"sqli": "prevent", "xss": "prevent", "cmdi": "prevent", "lfi": "prevent"}},
}
_PASSWORD_RE = re.compile(r"^\s*password:\s*(\S+)\s*$")


class DemoError(Exception):
    """The demo could not start; the message says what to do."""


class _Stop(BaseException):
    """SIGINT or SIGTERM arrived: stop the demo (a BaseException so no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def _stop_children(procs: list[subprocess.Popen[str] | None]) -> None:
    """SIGTERM the app first (its defender flushes audits to the console), then the console; a second
    Ctrl-C or 15 s without exit escalates to SIGKILL."""
    hurry = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: hurry.set())
    for proc in procs:
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while proc.poll() is None and not hurry.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@dataclass
class Credentials:
    username: str
    password: str


def _pump(stream: IO[str], prefix: str, on_line: list[str] | None) -> None:
    for line in stream:
        if on_line is not None:
            on_line.append(line)
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def _start_console(
    data: Path, host: str, port: int, defender_port: int
) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [sys.executable, "-m", "garrison", "console", "--data-dir", str(data / "console"), "--host", host]
    cmd += ["--port", str(port), "--defender-port", str(defender_port), "--public-address", host]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stdout, "[console] ", lines), daemon=True).start()
    return proc, lines


def _wait_state(state: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the console exited with status {proc.returncode}; see its output above")
        if state.exists():
            try:
                return dict(json.loads(state.read_text()))
            except json.JSONDecodeError:
                pass
        time.sleep(0.1)
    raise DemoError("the console did not come up within 60 s")


def _credentials(data: Path, console_lines: list[str]) -> Credentials:
    """The console shows the admin password once, on first start; the demo keeps it (0600) for its restarts."""
    saved = data / "demo-credentials.json"
    for _ in range(50):
        for line in console_lines:
            m = _PASSWORD_RE.match(line)
            if m:
                fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump({"username": "admin", "password": m.group(1)}, f)
                return Credentials("admin", m.group(1))
        if saved.exists():
            d = json.loads(saved.read_text())
            return Credentials(d["username"], d["password"])
        time.sleep(0.1)
    raise DemoError(
        f"no admin credentials: the console's data dir {data / 'console'} was created outside the demo"
    )


def _install_policy(api: httpx.Client) -> None:
    current = api.get("/policies/runtime/app-embedded").raise_for_status().json()
    rules = [r for r in current.get("rules", []) if r.get("name") != DEMO_RULE["name"]]
    resp = api.put("/policies/runtime/app-embedded", json={"rules": [DEMO_RULE, *rules]})
    if resp.status_code == 422 and "cnaf" in resp.text:  # a console built without CNAF controls
        rule = {k: v for k, v in DEMO_RULE.items() if k != "cnaf"}
        resp = api.put("/policies/runtime/app-embedded", json={"rules": [rule, *rules]})
    resp.raise_for_status()


def _start_app(data: Path, ws_address: str, bundle: str, app_port: int) -> subprocess.Popen[str]:
    vcap = {
        "application_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "garrison-demo")),
        "application_name": DEMO_APP,
        "organization_name": "demo-org",
        "space_name": "dev",
        "instance_index": 0,
        "limits": {"mem": 256},
    }
    env = dict(os.environ)
    env.update(
        DEFENDER_TYPE="appEmbedded",
        DEFENDER_APP_ID=DEMO_APP,
        WS_ADDRESS=ws_address,
        DATA_FOLDER=str(data / "defender"),
        INSTALL_BUNDLE=bundle,
        VCAP_APPLICATION=json.dumps(vcap),
        PORT=str(app_port),
    )
    (data / "defender").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "garrison", "defender", "app-embedded", sys.executable, sample_app.__file__]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(proc.stdout, "[app] ", None), daemon=True).start()
    return proc


def _wait_http(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the protected app exited with status {proc.returncode}; see its output above")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(f"the sample app did not answer at {url}")


def run_demo(
    data: Path, host: str, port: int, defender_port: int, app_port: int, exit_after: float | None
) -> int:
    data.mkdir(parents=True, exist_ok=True)
    # Explicit handlers: Python only installs its KeyboardInterrupt handler when SIGINT is not ignored,
    # and a demo started from a script or service may inherit SIGINT ignored (Ctrl-C then did nothing).
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    console: subprocess.Popen[str] | None = None
    app: subprocess.Popen[str] | None = None
    try:
        console, lines = _start_console(data, host, port, defender_port)
        state = _wait_state(data / "console" / "console.json", console)
        creds = _credentials(data, lines)
        api = httpx.Client(
            base_url=str(state["api_url"]),
            verify=str(state["ca_pem_path"]),
            auth=(creds.username, creds.password),
            timeout=30,
        )
        _install_policy(api)
        bundle = api.get("/defenders/install-bundle").raise_for_status().json()["bundle"]
        app = _start_app(data, str(state["ws_address"]), bundle, app_port)
        app_url = f"http://{host}:{app_port}"
        _wait_http(app_url + "/healthz", app)
        print(
            "\n"
            f"Garrison demo is running.\n"
            f"  Console:     {state['url']}   (CA: {state['ca_pem_path']})\n"
            f"  Admin login: {creds.username} / {creds.password}\n"
            f"  Sample app:  {app_url}   (app '{DEMO_APP}', rule '{DEMO_RULE['name']}')\n"
            f"Try an attack and watch it in the console's Audits page:\n"
            f"  curl '{app_url}/run?cmd=bash'                    # denied process (kernel-enforced)\n"
            f"  curl '{app_url}/run?cmd=sh+-c+id'                # command injection (CNAF)\n"
            f"  curl '{app_url}/connect?host=127.0.0.1&port=25'   # denied outbound port\n"
            f"Press Ctrl-C to stop.\n"
            "GARRISON-DEMO-READY",
            flush=True,
        )
        deadline = None if exit_after is None else time.monotonic() + exit_after
        while deadline is None or time.monotonic() < deadline:
            if console.poll() is not None or app.poll() is not None:
                which = "console" if console.poll() is not None else "protected app"
                print(f"garrison demo: the {which} exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except _Stop as stop:
        print(f"\ngarrison demo: {stop} received, stopping the sample app and the console", flush=True)
        return 0
    except httpx.HTTPStatusError as exc:
        raise DemoError(
            f"the console refused {exc.request.method} {exc.request.url}: {exc.response.text}"
        ) from None
    finally:
        _stop_children([app, console])
        for sig, handler in previous.items():
            signal.signal(sig, handler)
