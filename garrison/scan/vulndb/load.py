"""Read advisories from OSV JSON/YAML files, directories, osv.dev `all.zip` exports, RubySec YAML and
the Node.js Security WG JSON (npm and core); the format is detected from each document.

Every source is turned into OSV-shaped dicts; a file that cannot be read is reported by name and the
rest of the import continues (bad input loses nothing that was good).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from garrison.scan.vulndb import nodejs_wg
from garrison.scan.vulndb.rubysec import rubysec_to_osv

_EXTS = (".json", ".yaml", ".yml")


@dataclass
class LoadErrors:
    errors: list[str] = field(default_factory=list)


def _decode(name: str, data: bytes) -> list[dict[str, Any]]:
    if name.endswith(".json"):
        doc: Any = json.loads(data)
    else:
        doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if isinstance(doc, dict) and nodejs_wg.is_index(doc):
        return [_node_wg(d, k) for k, d in doc.items()]
    docs = doc if isinstance(doc, list) else [doc]
    out: list[dict[str, Any]] = []
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError("not an OSV object")
        if "gem" in d and "id" not in d:
            out.append(rubysec_to_osv(d, name))
        elif nodejs_wg.is_npm_advisory(d) or nodejs_wg.is_core_advisory(d):
            out.append(_node_wg(d, stem))
        elif "id" in d:
            out.append(d)
        else:
            raise ValueError(
                "not an advisory: no OSV 'id', RubySec 'gem' or Node.js WG 'module_name'/'vulnerable'"
            )
    return out


def _node_wg(doc: dict[str, Any], number: str) -> dict[str, Any]:
    if nodejs_wg.is_npm_advisory(doc):
        return nodejs_wg.npm_to_osv(doc)
    if nodejs_wg.is_core_advisory(doc):
        if not number.isdigit():
            raise ValueError("Node.js core advisory: the file name must be its number (NN.json)")
        return nodejs_wg.core_to_osv(doc, number)
    raise ValueError(f"Node.js WG index entry {number} is neither an npm nor a core advisory")


def iter_advisories(paths: list[Path], errors: LoadErrors) -> Iterator[dict[str, Any]]:
    """Yield OSV dicts from every supported file under `paths` (dirs are walked, zips are opened)."""
    for root in paths:
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                numbered = any(f[:-5].isdigit() for f in filenames if f.endswith(".json"))
                for fn in sorted(filenames):
                    if fn == "index.json" and numbered:
                        continue  # Node.js WG: index.json repeats the NN.json files beside it
                    yield from _one(Path(dirpath) / fn, errors, walked=True)
        elif root.exists():
            yield from _one(root, errors, walked=False)
        else:
            errors.errors.append(f"{root}: no such file or directory")


def _one(path: Path, errors: LoadErrors, *, walked: bool) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith(".zip"):
        yield from _zip(path, errors)
        return
    if not name.endswith(_EXTS):
        if not walked:
            errors.errors.append(f"{path}: not a .json/.yaml/.yml/.zip file")
        return
    try:
        yield from _decode(name, path.read_bytes())
    except Exception as exc:
        errors.errors.append(f"{path}: {exc.__class__.__name__}: {str(exc)[:200]}")


def _zip(path: Path, errors: LoadErrors) -> Iterator[dict[str, Any]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        errors.errors.append(f"{path}: not a readable zip archive ({exc})")
        return
    with zf:
        for info in zf.infolist():
            lname = info.filename.lower()
            if info.is_dir() or not lname.endswith(_EXTS):
                continue
            if info.file_size > 64 << 20:
                errors.errors.append(f"{path}!{info.filename}: advisory larger than 64 MiB, skipped")
                continue
            try:
                yield from _decode(lname, zf.read(info))
            except Exception as exc:
                errors.errors.append(f"{path}!{info.filename}: {exc.__class__.__name__}: {str(exc)[:200]}")
