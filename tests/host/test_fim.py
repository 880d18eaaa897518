"""File integrity monitoring on real files: baseline, rescan, live fanotify (with the writer's pid)
and the inotify fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from garrison.host import fim
from garrison.host.fim_live import LiveMonitor
from garrison.host.model import HostEvent
from garrison.kernel import fanotify

GARRISON = [sys.executable, "-m", "garrison"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "watched"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin/tool").write_bytes(b"\x7fELF original tool")
    os.chmod(root / "bin/tool", 0o755)
    (root / "etc/app.conf").write_text("listen=127.0.0.1\n")
    (root / "etc/app.conf.swp").write_text("editor junk")
    return root


def _baseline(tmp_path: Path, root: Path) -> tuple[fim.Baseline, fim.Watchlist]:
    watch = fim.Watchlist([str(root)], fim.DEFAULT_EXCLUDES)
    base = fim.Baseline(tmp_path / "state/fim.db")
    assert base.build(watch) == 5  # root, bin, etc, tool, app.conf (the .swp is excluded)
    return base, watch


def test_rescan_finds_every_kind_of_change_including_a_restored_mtime(tmp_path: Path, tree: Path) -> None:
    base, watch = _baseline(tmp_path, tree)
    assert fim.rescan(base, watch, "cell") == []
    tool = tree / "bin/tool"
    st = tool.stat()
    tool.write_bytes(b"\x7fELF trojaned tool!")  # same size, content changed ...
    os.utime(tool, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and mtime put back
    os.chmod(tree / "etc/app.conf", 0o666)
    (tree / "bin/dropped").write_text("#!/bin/sh\n")
    (tree / "etc/new").write_text("x")
    os.rename(tree / "etc/new", tree / "etc/app.conf")  # replaced by another inode
    events = {e.path: e for e in fim.rescan(base, watch, "cell")}
    assert events[str(tool)].action == "modified"
    assert "sha256" in events[str(tool)].extra["fields"] and events[str(tool)].severity in ("medium", "high")
    assert events[str(tree / "bin/dropped")].action == "created"
    assert events[str(tree / "etc/app.conf")].action == "replaced"
    (tree / "bin/dropped").unlink()
    fim.accept(base, fim.rescan(base, watch, "cell"))
    os.unlink(tool)
    after = fim.rescan(base, watch, "cell")
    assert [(e.path, e.action) for e in after] == [(str(tool), "deleted")]
    base.close()
    assert oct((tmp_path / "state/fim.db").stat().st_mode & 0o777) == "0o600"


def _collect(mon: LiveMonitor, want: int, seconds: float = 10.0) -> list[HostEvent]:
    got: list[HostEvent] = []
    mon.emit = got.append
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        mon.poll(0.2)
    return got


@pytest.mark.skipif(fanotify.available() is not None, reason=f"fanotify FID mode: {fanotify.available()}")
def test_live_fanotify_reports_change_with_writer_pid(tmp_path: Path, tree: Path) -> None:
    base, watch = _baseline(tmp_path, tree)
    mon = LiveMonitor(base, watch, lambda e: None)
    assert mon.mechanism.startswith("fanotify")
    try:
        writer = subprocess.Popen(
            ["/bin/sh", "-c", f"sleep 0.2; printf evil >> {tree}/bin/tool; echo x > {tree}/etc/app.conf.swp; "
                              "sleep 1"]
        )
        events = _collect(mon, 1)
        writer.wait()
        by_path = {e.path: e for e in events}
        ev = by_path[str(tree / "bin/tool")]
        assert ev.action == "modified" and ev.pid is not None
        assert ev.pid == writer.pid and ev.process and ev.process.endswith("sh")  # the shell's builtin wrote
        assert ev.user == "root"
        assert str(tree / "etc/app.conf.swp") not in by_path  # excluded
        # a second event on an unchanged state is not reported again; a further change is
        (tree / "etc/app.conf").write_text("listen=0.0.0.0\n")
        again = _collect(mon, 1)
        assert [e.path for e in again] == [str(tree / "etc/app.conf")]
        assert again[0].pid == os.getpid()
    finally:
        mon.close()
        base.close()


def test_live_inotify_fallback_without_pid(tmp_path: Path, tree: Path) -> None:
    base, watch = _baseline(tmp_path, tree)
    mon = LiveMonitor(base, watch, lambda e: None, force_inotify=True)
    assert mon.mechanism.startswith("inotify")
    try:
        (tree / "etc/sub").mkdir()
        time.sleep(0.2)
        (tree / "etc/sub/inner").write_text("created inside a new directory")
        events = _collect(mon, 2)
        paths = {e.path: e for e in events}
        assert paths[str(tree / "etc/sub")].action == "created"
        assert paths[str(tree / "etc/sub/inner")].action == "created"
        assert all(e.pid is None for e in events)
    finally:
        mon.close()
        base.close()


def test_cli_baseline_check_accept(tmp_path: Path, tree: Path) -> None:
    state = tmp_path / "state"
    common = ["--path", str(tree), "--state", str(state)]
    missing = subprocess.run([*GARRISON, "host", "fim", "check", *common], capture_output=True, text=True)
    assert missing.returncode == 2 and "no baseline" in missing.stderr
    assert subprocess.run([*GARRISON, "host", "fim", "baseline", *common], capture_output=True).returncode == 0
    assert subprocess.run([*GARRISON, "host", "fim", "check", *common], capture_output=True).returncode == 0
    (tree / "etc/app.conf").write_text("changed\n")
    changed = subprocess.run([*GARRISON, "host", "fim", "check", "--json", "--accept", *common],
                             capture_output=True, text=True)
    assert changed.returncode == 1
    ev = HostEvent.model_validate_json(changed.stdout.splitlines()[0])
    assert ev.type == "fim" and ev.path == str(tree / "etc/app.conf")
    assert subprocess.run([*GARRISON, "host", "fim", "check", *common], capture_output=True).returncode == 0
