"""Build the channel `hello` from a Cloud Foundry environment (VCAP_APPLICATION and DEFENDER_* vars)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from garrison import __version__
from garrison.channel.protocol import MAX_INSTANCE, Hello


def hello_from_env(
    environ: Mapping[str, str] | None = None, *, kernel: dict[str, Any] | None = None
) -> Hello:
    """Identity as CF gives it; a garbled VCAP_APPLICATION is ignored field by field, not fatal."""
    env = os.environ if environ is None else environ
    try:
        vcap = json.loads(env.get("VCAP_APPLICATION", "") or "{}")
    except json.JSONDecodeError:
        vcap = {}
    if not isinstance(vcap, dict):
        vcap = {}

    def s(key: str) -> str:
        v = vcap.get(key)
        return v[:256] if isinstance(v, str) else ""  # the wire format's bound

    try:
        instance = int(env.get("CF_INSTANCE_INDEX", vcap.get("instance_index", 0)) or 0)
    except (TypeError, ValueError):
        instance = 0
    if not 0 <= instance <= MAX_INSTANCE:
        instance = 0
    app_id = (env.get("DEFENDER_APP_ID") or env.get("DEFENDER_ID") or s("application_name") or s("name"))[
        :200
    ]
    return Hello(
        defender_id=f"{app_id}-{instance}" if app_id else "",
        app_id=app_id,
        app_name=s("application_name") or s("name"),
        org=s("organization_name"),
        space=s("space_name"),
        app_guid=s("application_id"),
        instance=instance,
        version=__version__,
        hostname=socket.gethostname()[:256],
        kernel=kernel or {},
        droplet_digest=env.get("GARRISON_DROPLET_DIGEST", "")[:128],
    )
