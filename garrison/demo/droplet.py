"""A Cloud Foundry droplet of the demo's sample app, to try `garrison embed` and `run-droplet` without CF.

Laid out as CF stores a Python buildpack droplet (./app, ./deps, ./profile.d, ./tmp, ./logs and
./staging_info.yml with the start command); the app itself needs only python3 from the stack.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

from garrison.demo import sample_app

START_COMMAND = "python3 app.py"


def write_sample_droplet(path: Path) -> Path:
    """Write the droplet atomically (a temp file renamed over `path`); mode 0644 like a downloaded file."""
    now = int(time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tf:
            for d in ("./", "./app/", "./deps/", "./profile.d/", "./tmp/", "./logs/"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, now
                tf.addfile(ti)
            staging = json.dumps({"detected_buildpack": "python", "start_command": START_COMMAND})
            for name, data in (
                ("./app/app.py", Path(sample_app.__file__).read_bytes()),
                ("./staging_info.yml", staging.encode()),
            ):
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, now
                tf.addfile(ti, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
