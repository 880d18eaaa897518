"""Manifest editing: env block without quotes, comments and order kept, exact undo."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from garrison.cli.main import app
from garrison.embed.manifest import DefenderEnv, ManifestError, embed_text, undo_text

BUNDLE = "eyJ2ZXJzaW9uIjogMX0" * 40 + "="
ENV = DefenderEnv(ws_address="wss://console.example.com:8084", install_bundle=BUNDLE)

SINGLE = """\
---
# Storefront manifest
applications:
- name: shop   # the storefront
  memory: 256M
  instances: 2
  # how to start it
  command: python app.py --port $PORT
  env:
    LOG_LEVEL: "debug"   # keep quotes
    FEATURE_X: on
  routes:
  - route: shop.example.com
"""

MULTI = """\
applications:
  - name: api
    buildpacks:
      - python_buildpack
    memory: 128M
  - name: worker
    no-route: true
    command: python worker.py
"""


def test_embed_adds_plain_env_and_wraps_command() -> None:
    out = embed_text(SINGLE, ENV)
    assert "# how to start it" in out and "# keep quotes" in out and "# the storefront" in out
    assert "  command: .garrison/defender app-embedded python app.py --port $PORT\n" in out
    assert f"    INSTALL_BUNDLE: {BUNDLE}\n" in out  # one line, no quotes
    assert "    WS_ADDRESS: wss://console.example.com:8084\n" in out
    assert "    DEFENDER_TYPE: app-embedded\n" in out
    assert "    DEFENDER_APP_ID: shop\n" in out
    assert "    DATA_FOLDER: /tmp\n" in out
    assert out.index("FEATURE_X") < out.index("DEFENDER_TYPE") < out.index("routes:")
    doc = YAML(typ="safe").load(out)
    assert doc["applications"][0]["env"]["INSTALL_BUNDLE"] == BUNDLE
    assert embed_text(out, ENV) == out  # idempotent


@pytest.mark.parametrize(("text", "app"), [(SINGLE, None), (MULTI, "api"), (MULTI, "worker")])
def test_undo_restores_byte_for_byte(text: str, app: str | None) -> None:
    assert undo_text(embed_text(text, ENV, app=app), app=app) == text


def test_multi_app_needs_app_choice() -> None:
    with pytest.raises(ManifestError, match="pick one with --app"):
        embed_text(MULTI, ENV)
    with pytest.raises(ManifestError, match="no application named 'nope'"):
        embed_text(MULTI, ENV, app="nope")


@pytest.mark.parametrize("bad", ["applications: [", "just: a mapping\n", "- a\n- list\n"])
def test_bad_manifest_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ManifestError):
        embed_text(bad, ENV)


def test_undo_of_plain_manifest_refused() -> None:
    with pytest.raises(ManifestError, match="nothing to undo"):
        undo_text(SINGLE)


def test_cli_manifest_only_round_trip(tmp_path: Path) -> None:
    m = tmp_path / "manifest.yml"
    m.write_text(SINGLE)
    bundle_file = tmp_path / "bundle.txt"
    bundle_file.write_text(BUNDLE + "\n")
    r = CliRunner().invoke(
        app,
        [
            "embed",
            "--manifest",
            str(m),
            "--install-bundle",
            f"@{bundle_file}",
            "--ws-address",
            "wss://c:8084",
        ],
    )
    assert r.exit_code == 0, r.output
    text = m.read_text()
    assert "command: ./defender app-embedded python app.py --port $PORT" in text
    assert f"INSTALL_BUNDLE: {BUNDLE}\n" in text
    r = CliRunner().invoke(app, ["embed", "--undo", "--manifest", str(m)])
    assert r.exit_code == 0, r.output
    assert m.read_text() == SINGLE


def test_cli_bad_manifest_leaves_file_untouched(tmp_path: Path) -> None:
    m = tmp_path / "manifest.yml"
    m.write_text(MULTI)
    r = CliRunner().invoke(
        app, ["embed", "-m", str(m), "--install-bundle", BUNDLE, "--ws-address", "wss://c:1"]
    )
    assert r.exit_code == 2
    assert "pick one with --app" in r.output
    assert m.read_text() == MULTI


def test_cli_manifest_without_command_needs_one(tmp_path: Path) -> None:
    m = tmp_path / "manifest.yml"
    m.write_text(MULTI)
    r = CliRunner().invoke(
        app, ["embed", "-m", str(m), "--app", "api", "--install-bundle", BUNDLE, "--ws-address", "wss://c:1"]
    )
    assert r.exit_code == 2
    assert "no start command" in r.output
    assert m.read_text() == MULTI
