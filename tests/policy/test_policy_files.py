"""Policy files: one reader for every command, errors that name the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from garrison.policy.cnaf import CnafControls
from garrison.policy.files import PolicyFileError, load_model, read_document


def test_json_and_yaml_read_alike(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"a": [1, 2]}')
    (tmp_path / "p.yaml").write_text("a: [1, 2]\n")
    assert read_document(tmp_path / "p.json") == read_document(tmp_path / "p.yaml") == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.yaml", None, "cannot read"),
        ("latin1.yaml", b"name: caf\xe9\n", "not UTF-8"),
        ("broken.json", b"{", "not valid JSON/YAML"),
        ("broken.yaml", b"a: [1,\n", "not valid JSON/YAML"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, content: bytes | None, says: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PolicyFileError) as err:
        read_document(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value)


def test_invalid_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "cnaf.yaml"
    path.write_text("sqli: sometimes\n")
    with pytest.raises(PolicyFileError) as err:
        load_model(path, CnafControls)
    assert "invalid policy" in str(err.value) and "sqli" in str(err.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_model(empty, CnafControls) == CnafControls()


def test_scan_command_refuses_a_bad_policy_file(tmp_path: Path) -> None:
    policy = tmp_path / "assurance.yaml"
    policy.write_text("- not a mapping\n")
    run = subprocess.run(
        [sys.executable, "-m", "garrison", "scan", str(tmp_path), "--no-db", "--policy", str(policy)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert "assurance policy" in run.stderr and str(policy.name) in run.stderr
