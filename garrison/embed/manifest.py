"""Adding the defender's env block and start command to a CF manifest.yml, and taking them out again.

ruamel.yaml's round-trip mode keeps the operator's comments, key order and layout; only the keys we
own change. Values are written as plain scalars (no quotes), on one line, as CF docs show them.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from garrison.embed import command as cmd

ENV_KEYS = ("DEFENDER_TYPE", "DEFENDER_APP_ID", "WS_ADDRESS", "DATA_FOLDER", "INSTALL_BUNDLE")


class ManifestError(Exception):
    """The manifest cannot be embedded/restored; the message says why and nothing was written."""


@dataclass(frozen=True)
class DefenderEnv:
    """The env block a defender needs; field names map to ENV_KEYS."""

    ws_address: str
    install_bundle: str
    app_id: str = ""
    defender_type: str = "app-embedded"
    data_folder: str = "/tmp"

    def as_env(self, app_name: str) -> dict[str, str]:
        return {
            "DEFENDER_TYPE": self.defender_type,
            "DEFENDER_APP_ID": self.app_id or app_name,
            "WS_ADDRESS": self.ws_address,
            "DATA_FOLDER": self.data_folder,
            "INSTALL_BUNDLE": self.install_bundle,
        }


def _yaml_for(text: str) -> YAML:
    """A round-trip YAML configured to reproduce this file's own indentation and document marker."""
    y = YAML(typ="rt")
    y.width = 1 << 20  # never fold a long INSTALL_BUNDLE
    y.preserve_quotes = True
    m = re.search(r"^applications:[ \t]*\n(?:[ \t]*(?:#.*)?\n)*([ \t]*)-", text, re.M)
    if m and len(m.group(1)) >= 2:
        off = len(m.group(1))
        y.indent(mapping=2, sequence=off + 2, offset=off)
    else:
        y.indent(mapping=2, sequence=2, offset=0)
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    y.explicit_start = first.strip() == "---"
    return y


def _load(text: str) -> tuple[YAML, Any]:
    y = _yaml_for(text)
    try:
        doc = y.load(text)
    except YAMLError as e:
        raise ManifestError(f"manifest is not valid YAML: {e}") from e
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("applications"), list):
        raise ManifestError("manifest has no 'applications:' list")
    return y, doc


def _select(doc: Any, app: str | None) -> CommentedMap:
    apps = [a for a in doc["applications"] if isinstance(a, CommentedMap)]
    names = [str(a.get("name", "")) for a in apps]
    if app is not None:
        for a, n in zip(apps, names, strict=True):
            if n == app:
                return a
        raise ManifestError(f"no application named {app!r} in the manifest (found: {', '.join(names)})")
    if len(apps) != 1:
        raise ManifestError(
            f"the manifest has {len(apps)} applications; pick one with --app ({', '.join(names)})"
        )
    return apps[0]


def _dump(y: YAML, doc: Any) -> str:
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def app_names(text: str) -> list[str]:
    _, doc = _load(text)
    return [str(a.get("name", "")) for a in doc["applications"] if isinstance(a, CommentedMap)]


def app_command(text: str, app: str | None = None) -> str | None:
    """The app's `command:` (None when absent or null: CF then uses the droplet's start command)."""
    _, doc = _load(text)
    value = _select(doc, app).get("command")
    return None if value in (None, "null", "default") else str(value)


def embed_text(
    text: str,
    env: DefenderEnv,
    *,
    app: str | None = None,
    start_command: str | None = None,
    defender_path: str = cmd.DEFAULT_DROPLET_PATH,
) -> str:
    """Manifest text with the env block added and the app's command wrapped.

    `start_command` sets the command when the manifest has none (e.g. given with --command); an
    existing manifest command is wrapped in place. With neither, the command is left to the droplet.
    """
    y, doc = _load(text)
    a = _select(doc, app)
    current = a.get("command")
    if current not in (None, "null", "default"):
        a["command"] = cmd.wrap(str(current), defender_path)
    elif start_command:
        a["command"] = cmd.wrap(start_command, defender_path)
    envmap = a.get("env")
    if envmap is None:
        envmap = CommentedMap()
        a["env"] = envmap
    elif not isinstance(envmap, dict):
        raise ManifestError("the application's 'env:' is not a mapping")
    for k, v in env.as_env(str(a.get("name", ""))).items():
        if not v:
            raise ManifestError(f"{k} would be empty")
        envmap[k] = v
    return _dump(y, doc)


def undo_text(text: str, *, app: str | None = None) -> str:
    """Manifest text with the defender's env keys removed and the original command restored."""
    y, doc = _load(text)
    a = _select(doc, app)
    current = a.get("command")
    envmap = a.get("env")
    changed = False
    if isinstance(current, str) and cmd.is_wrapped(current):
        a["command"] = cmd.unwrap(current)
        changed = True
    if isinstance(envmap, dict):
        for k in ENV_KEYS:
            if k in envmap:
                del envmap[k]
                changed = True
        if not envmap:
            del a["env"]
    if not changed:
        raise ManifestError("the manifest has no defender embedded: nothing to undo")
    return _dump(y, doc)


def rewrite_file(path: Path, new_text: str) -> None:
    """Replace the manifest atomically so an interrupted run leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.garrison-tmp")
    tmp.write_text(new_text, encoding="utf-8")
    tmp.replace(path)
