"""`--blobstore DIR`: droplets found there are scanned by the scanner component and stored as scans."""

from __future__ import annotations

import io
import tarfile
import time


def _droplet(path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_blobstore_droplets_are_scanned(console_factory, tmp_path):
    blob = tmp_path / "blobstore"
    blob.mkdir()
    _droplet(blob / "shop.tgz", {"app/requirements.txt": b"flask==2.0.0\n"})
    c = console_factory(args=["--blobstore", str(blob)], env={"GARRISON_DB_DIR": str(tmp_path / "no-db")})
    with c.api() as api:
        deadline = time.monotonic() + 60
        scans = []
        while not scans and time.monotonic() < deadline:
            # a droplet the Garrison buildpack did not stage: no app known, the blob path is kept apart
            scans = [s for s in api.get("/scans").json() if s["blob"] == "shop.tgz"]
            time.sleep(0.2)
        assert scans, c.log()
        assert scans[0]["app_name"] == "" and scans[0]["source"] == "blobstore"
        verdict = api.get("/scans/verdict", params={"digest": scans[0]["digest"]}).json()
        assert verdict["verdict"] in ("pass", "fail")
