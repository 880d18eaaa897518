"""The standalone defender: extracted into an empty dir, run with an empty environment (no PATH, no
Python), as it would run from a droplet on the cflinuxfs4 stack."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from garrison import __version__

# cflinuxfs4 is Ubuntu 22.04: glibc 2.35. Nothing in the bundle may need newer symbol versions.
STACK_GLIBC = (2, 35)


@pytest.fixture(scope="module")
def extracted(defender_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("empty")
    with tarfile.open(defender_tarball) as tf:
        tf.extractall(d, filter="data")
    assert (d / "defender").is_file()
    return d


def run_clean(d: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in (env or {}).items()), str(d / "defender"), *args],
        capture_output=True,
        text=True,
        cwd=d,
        timeout=60,
    )


def test_help_and_version_with_empty_env(extracted: Path) -> None:
    r = run_clean(extracted, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: defender" in r.stdout
    r = run_clean(extracted, "version")
    assert r.returncode == 0 and r.stdout.strip() == __version__


def test_no_python_from_the_host(extracted: Path) -> None:
    """The bundle carries its interpreter: no libpython or site-packages path of this machine inside."""
    lib = extracted / "defender_lib"
    assert any(p.name.startswith("libpython3") for p in lib.iterdir())
    r = subprocess.run(["ldd", str(extracted / "defender")], capture_output=True, text=True)
    assert "libpython" not in r.stdout  # loaded from defender_lib at run time, not from the system


def test_glibc_symbols_fit_cflinuxfs4(extracted: Path) -> None:
    newest = (0, 0)
    for path in [extracted / "defender", *extracted.joinpath("defender_lib").rglob("*.so*")]:
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
            f.seek(0)
            sec = ELFFile(f).get_section_by_name(".gnu.version_r")
            if not isinstance(sec, GNUVerNeedSection):
                continue
            for _verneed, auxes in sec.iter_versions():
                for aux in auxes:
                    m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)", aux.name)
                    if m:
                        newest = max(newest, (int(m[1]), int(m[2])))
    assert (2, 17) <= newest <= STACK_GLIBC, f"needs glibc {newest}, newer than the stack's {STACK_GLIBC}"


def test_app_embedded_bad_bundle_is_a_documented_error(extracted: Path) -> None:
    if "app-embedded" not in run_clean(extracted, "--help").stdout:
        pytest.skip("the defender component has not registered `defender app-embedded` yet")
    r = run_clean(
        extracted,
        "app-embedded",
        "/bin/true",
        env={"INSTALL_BUNDLE": "not-a-bundle!!", "DATA_FOLDER": str(extracted)},
    )
    assert r.returncode not in (0, 1), (r.returncode, r.stdout, r.stderr)  # not the app's status, not a crash
    assert "INSTALL_BUNDLE" in r.stderr
    assert "Traceback" not in r.stderr


def test_bundle_carries_the_native_data_plane(extracted: Path) -> None:
    """The standalone build runs the C notification loop, not the Python fallback."""
    if "app-embedded" not in run_clean(extracted, "--help").stdout:
        pytest.skip("the defender component has not registered `defender app-embedded` yet")
    from garrison.defender.dataplane import native_available

    if not native_available()[0]:
        pytest.skip("the extension is not built in this tree, so the bundle cannot carry it")
    assert list(extracted.joinpath("defender_lib").rglob("_native*.so")), "extension missing from the bundle"
    policy = extracted / "policy.json"
    policy.write_text('{"rules": [{"name": "all"}]}')
    r = run_clean(
        extracted,
        "app-embedded",
        "--policy",
        str(policy),
        "/bin/true",
        env={"DATA_FOLDER": str(extracted)},
    )
    assert r.returncode == 0, r.stderr
    assert "data plane: native" in r.stderr, r.stderr
