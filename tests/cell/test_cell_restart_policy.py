"""A restarted cell defender gates execs again without waiting for the console: with a cached policy
of this console it starts on it at once (the console's current policy replaces it when it answers);
without one it still waits for the console, as on a first start."""

from __future__ import annotations

import socket
from pathlib import Path

from garrison.cell.console import CellConsoleLink
from garrison.channel.bundle import InstallBundle
from garrison.channel.credentials import ca_fingerprint
from garrison.channel.policy_cache import save_cached_policy
from garrison.pki.ca import ensure_ca
from garrison.policy.model import RuntimePolicy


def _unreachable_bundle(tmp_path: Path) -> InstallBundle:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ca = ensure_ca(tmp_path / "ca")
    return InstallBundle(version=1, ca_pem=ca.cert_pem.decode(), ws_address=f"wss://127.0.0.1:{port}",
                         enrolment_token="t")


def test_restart_starts_on_the_cached_policy_at_once(tmp_path: Path) -> None:
    bundle = _unreachable_bundle(tmp_path)
    policy = RuntimePolicy.model_validate({"revision": 7, "rules": [{"name": "cached"}]})
    save_cached_policy(tmp_path / "data", policy, console_ca=ca_fingerprint(bundle.ca_pem))
    link = CellConsoleLink(bundle, tmp_path / "data", host="cell-a")
    try:
        got, how = link.first_policy(timeout=3600)  # returns after RESTART_WAIT_S, not the console timeout
        assert got is not None and got.revision == 7 and "cached policy revision 7" in how
    finally:
        link.stop()


def test_first_start_without_cache_waits_for_the_console(tmp_path: Path) -> None:
    link = CellConsoleLink(_unreachable_bundle(tmp_path), tmp_path / "data", host="cell-a")
    try:
        got, how = link.first_policy(timeout=2)
        assert got is None and "no cached policy" in how
    finally:
        link.stop()
