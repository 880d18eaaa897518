"""Droplet & host scanner: inventory, OSV vulnerability matching, secrets, malware, assurance verdicts.

Layout (pip-audit style): `inventory/<ecosystem>.py`, `vulndb/` (load, index, match), `report/<format>.py`,
one orchestrator (`scanner.py`), a thin CLI (`cli.py`); `buildpack/`, `blobstore.py` and `gate.py` are the
staging, rescan and run-time entry points.
"""
