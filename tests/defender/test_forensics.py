"""The forensic ring stays bounded, keeps the newest activity, and is what the upload command returns."""

from __future__ import annotations

from pathlib import Path

from garrison.defender.context import DefenderContext
from garrison.defender.forensics import ForensicRing
from garrison.defender.launch import AppEmbeddedDefender, Options
from garrison.kernel.features import KernelFeatures
from garrison.policy.audit import AuditEvent
from garrison.policy.model import RuntimePolicy
from garrison.policy.scope import Identity


def test_ring_is_bounded_and_keeps_newest(tmp_path: Path) -> None:
    ring = ForensicRing(tmp_path, max_bytes=64 * 1024)
    for i in range(5000):
        ring.add("exec", pid=i, exe="/bin/true", argv=["true", "x" * 20])
    ring.flush()
    total = sum(p.stat().st_size for p in tmp_path.glob("forensics*.jsonl"))
    assert total <= 64 * 1024
    snap = ring.snapshot()
    assert snap[-1]["pid"] == 4999 and snap[0]["pid"] > 0
    assert [r["pid"] for r in snap] == sorted(r["pid"] for r in snap)


def test_torn_line_after_crash_is_skipped(tmp_path: Path) -> None:
    ring = ForensicRing(tmp_path)
    ring.add("exec", pid=1)
    ring.flush()
    with open(tmp_path / "forensics.jsonl", "a") as f:
        f.write('{"t": 1, "kind": "ex')
    assert [r["pid"] for r in ForensicRing(tmp_path).snapshot()] == [1]


def test_upload_forensics_command_returns_activity_and_audits(tmp_path: Path) -> None:
    d = AppEmbeddedDefender(["/bin/true"], {"DATA_FOLDER": str(tmp_path)}, Options())
    ctx = DefenderContext(Identity(app_name="shop"), "def-1", KernelFeatures(), ForensicRing(tmp_path))
    ctx.set_policy(RuntimePolicy.model_validate({"rules": [{"name": "r"}]}))
    d.ctx = ctx
    ctx.record("connect", pid=7, dest="10.0.0.1:443")
    ctx.audit(AuditEvent(type="process", effect="alert", control="processes.deny", pid=8, message="m"))
    out = d._command("upload_forensics", {})
    kinds = [r["kind"] for r in out["records"]]
    assert kinds == ["connect", "audit"]
    audit = out["records"][1]
    assert audit["defender_id"] == "def-1" and audit["app_name"] == "shop" and audit["rule"] == "r"
    try:
        d._command("rm -rf", {})
    except ValueError as exc:
        assert "unknown command" in str(exc)
    else:
        raise AssertionError("unknown command accepted")
