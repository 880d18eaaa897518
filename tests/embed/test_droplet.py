"""Embedding into a droplet: layout, start command, exact undo, combined with a manifest."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from garrison.cli.main import app
from tests.embed.droplets import build_droplet, members, read_member


def test_embed_then_undo(tmp_path: Path, fake_defender: Path) -> None:
    src = build_droplet(tmp_path / "shop.tgz")
    original_staging = read_member(src, "staging_info.yml")
    out = tmp_path / "embedded.tgz"
    r = CliRunner().invoke(app, ["embed", str(src), "-o", str(out), "--defender", str(fake_defender)])
    assert r.exit_code == 0, r.output
    got = members(out)
    assert got["app/.garrison/defender"].mode & 0o111
    assert got["app/.garrison/defender"].uid == 2000  # owned like the app dir (vcap)
    assert "app/.garrison/defender_lib/README" in got
    assert set(members(src)) <= set(got)
    info = json.loads(read_member(out, "staging_info.yml"))
    assert info == {
        "detected_buildpack": "python",
        "start_command": ".garrison/defender app-embedded python3 app.py",
    }

    # embedding again replaces the defender instead of wrapping twice
    r = CliRunner().invoke(app, ["embed", str(out), "--defender", str(fake_defender)])
    assert r.exit_code == 0, r.output
    assert json.loads(read_member(out, "staging_info.yml"))["start_command"] == info["start_command"]

    r = CliRunner().invoke(app, ["embed", "--undo", str(out)])
    assert r.exit_code == 0, r.output
    assert set(members(out)) == set(members(src))
    assert read_member(out, "staging_info.yml") == original_staging


def test_droplet_and_manifest_together(tmp_path: Path, fake_defender: Path) -> None:
    src = build_droplet(tmp_path / "shop.tgz", start_command="cd . && python3 app.py")
    manifest = tmp_path / "manifest.yml"
    manifest.write_text("applications:\n- name: shop  # web\n  memory: 64M\n")
    r = CliRunner().invoke(
        app,
        [
            "embed", str(src), "-m", str(manifest), "--defender", str(fake_defender),
            "--install-bundle", "QUJD", "--ws-address", "wss://127.0.0.1:8084", "--app-id", "shop-1",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    staged = json.loads(read_member(src, "staging_info.yml"))["start_command"]
    assert staged == ".garrison/defender app-embedded bash -c 'cd . && python3 app.py'"
    text = manifest.read_text()
    assert "command" not in text  # the droplet carries the wrapped command
    assert "DEFENDER_APP_ID: shop-1\n" in text and "INSTALL_BUNDLE: QUJD\n" in text and "# web" in text


def test_not_a_droplet(tmp_path: Path, fake_defender: Path) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b this is not gzip")
    r = CliRunner().invoke(app, ["embed", str(bad), "--defender", str(fake_defender)])
    assert r.exit_code == 2 and "not a readable tar archive" in r.output
    assert bad.read_bytes() == b"\x1f\x8b this is not gzip"
    no_staging = build_droplet(tmp_path / "x.tgz", staging=b"[1, 2]")
    r = CliRunner().invoke(app, ["embed", str(no_staging), "--defender", str(fake_defender)])
    assert r.exit_code == 2 and "not a mapping" in r.output


def test_missing_start_command(tmp_path: Path, fake_defender: Path) -> None:
    src = build_droplet(tmp_path / "x.tgz", staging=b'{"detected_buildpack":"binary"}')
    r = CliRunner().invoke(app, ["embed", str(src), "--defender", str(fake_defender)])
    assert r.exit_code == 2 and "--command" in r.output
    r = CliRunner().invoke(
        app, ["embed", str(src), "--defender", str(fake_defender), "--command", "./server"]
    )
    assert r.exit_code == 0, r.output


def test_undo_of_plain_droplet(tmp_path: Path) -> None:
    src = build_droplet(tmp_path / "x.tgz")
    before = src.read_bytes()
    r = CliRunner().invoke(app, ["embed", "--undo", str(src)])
    assert r.exit_code == 2 and "nothing to undo" in r.output
    assert src.read_bytes() == before
