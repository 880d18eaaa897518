"""The BOSH release's job templates rendered with Ruby's ERB as the director renders them (property
defaults from the job spec, `p`/`if_p`/`spec`), and the results checked: the policy parses as a runtime
policy, the ctl scripts are valid bash that start what the spec promises, the monit file matches
them, the runtime-config add-on parses and targets Diego cells."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from garrison.channel.bundle import decode_bundle
from garrison.policy.model import RuntimePolicy

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "bosh" / "jobs" / "garrison-cell"
RENDER = Path(__file__).with_name("bosh_render.rb")
pytestmark = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby (Debian package) not installed")

PROPS = {"garrison": {"console": {"url": "https://console.example.test:8083", "token": "t0k'en$",
                                  "ca_cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}}}


def render(template: str, props: dict[str, Any] = PROPS) -> str:
    proc = subprocess.run(["ruby", str(RENDER), str(JOB), template, json.dumps(props)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _spec() -> dict[str, Any]:
    return yaml.safe_load((JOB / "spec").read_text())


def test_every_template_in_the_spec_exists_and_renders() -> None:
    spec = _spec()
    for template in spec["templates"]:
        assert (JOB / "templates" / template).is_file(), template
        render(template)
    assert (REPO / "bosh/packages/garrison/spec").is_file()
    assert subprocess.run(["bash", "-n", str(REPO / "bosh/packages/garrison/packaging")]).returncode == 0


def test_default_policy_is_a_valid_runtime_policy_and_overrides_apply() -> None:
    policy = RuntimePolicy.model_validate_json(render("policy.json.erb"))
    assert policy.rules[0].processes.drift_prevention
    mine = {"rules": [{"name": "strict", "processes": {"effect": "prevent", "deny": ["sh"]}}]}
    custom = RuntimePolicy.model_validate_json(render("policy.json.erb", {**PROPS, "garrison": {
        **PROPS["garrison"], "cell": {"policy": mine}}}))
    assert custom.rules[0].name == "strict" and custom.rules[0].processes.effect == "prevent"


def test_ctl_scripts_are_bash_and_start_the_commands(tmp_path: Path) -> None:
    for name, needle in (("cell-ctl.erb", "bin/defender cell"), ("host-ctl.erb", "bin/garrison host agent")):
        text = render(name)
        script = tmp_path / name
        script.write_text(text)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, text
        assert needle in text
    cell = render("cell-ctl.erb")
    assert "--runc-root /run/containerd/runc/garden" in cell and "--runc-root /run/runc" in cell
    assert "--exec-fail-closed" not in cell
    assert "--exec-fail-closed 30.0 \\" in render("cell-ctl.erb", {"garrison": {"cell": {"exec_fail_closed_s": 30}}})
    host = render("host-ctl.erb")
    assert "--path /var/vcap/packages" in host and "--name diego-cell-0d1c9a7e" in host
    env = render("env.erb")
    quoted = subprocess.run(["bash", "-c", f"{env}\nprintf %s \"$GARRISON_TOKEN\""], capture_output=True, text=True)
    assert quoted.stdout == "t0k'en$"  # shell-quoted: a token is never interpreted
    off = render("host-ctl.erb", {"garrison": {"console": {"url": ""}}})
    assert "host agent off" in off and "garrison host agent" not in off.split("host agent off")[0].split("start)")[1]


def test_monit_matches_the_ctl_pidfiles() -> None:
    monit = (JOB / "monit").read_text()
    for name, pid in (("cell-ctl.erb", "cell.pid"), ("host-ctl.erb", "host.pid")):
        assert f"/var/vcap/sys/run/garrison-cell/{pid}" in monit
        assert f"PIDFILE=$RUN/{pid}" in render(name)
        assert f"bin/{name.removesuffix('.erb')} start" in monit


def test_runtime_config_addon_targets_diego_cells() -> None:
    doc = yaml.safe_load((REPO / "bosh/manifests/runtime-config.yml").read_text())
    addon = doc["addons"][0]
    assert addon["include"]["jobs"] == [{"name": "rep", "release": "diego"}]
    assert addon["jobs"][0]["name"] == "garrison-cell" == _spec()["name"]
    declared = set(_spec()["properties"])
    used = {"garrison.console." + k for k in addon["jobs"][0]["properties"]["garrison"]["console"]}
    assert used <= declared


def test_console_makes_the_addon_for_its_own_address(console: Any) -> None:
    with console.api() as api:
        r = api.post("/hosts/bosh-addon")
        assert r.status_code == 201, r.text
        doc = yaml.safe_load(r.json()["runtime_config"])
        props = doc["addons"][0]["jobs"][0]["properties"]["garrison"]
        assert props["console"]["url"] == console.url and "BEGIN CERTIFICATE" in props["console"]["ca_cert"]
        RuntimePolicy.model_validate(props["cell"]["policy"])
        token = props["console"]["token"]
    with console.api(token=token) as cell_api:  # the cells' token reports to the Hosts API
        ev = {"events": [{"type": "access", "action": "login", "user": "bosh_x", "severity": "low"}]}
        assert cell_api.post("/hosts/cell-addon-test/events", json=ev).status_code == 201
    # the add-on's properties render through the job's templates
    rendered = render("env.erb", {"garrison": props})
    assert f"GARRISON_CONSOLE_URL={console.url}" in rendered
    # the cell defender enrols with the console through the add-on's cell install bundle
    bundle = decode_bundle(props["cell"]["install_bundle"])
    assert bundle.ws_address.startswith("wss://") and "BEGIN CERTIFICATE" in bundle.ca_pem
    assert render("install-bundle.erb", {"garrison": props}).strip() == props["cell"]["install_bundle"]
    ctl = render("cell-ctl.erb", {"garrison": props})
    assert 'INSTALL_BUNDLE="$(cat /var/vcap/jobs/garrison-cell/config/install-bundle)"' in ctl
    assert "INSTALL_BUNDLE" not in render("cell-ctl.erb")  # no bundle: the policy file alone
