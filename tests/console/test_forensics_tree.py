"""Issue 18.8: the console rebuilds an app's process tree from its defender's forensic records, whole
or for one incident's pid, through the real WSS channel."""

from __future__ import annotations

import asyncio
import uuid

from garrison.channel import protocol as p
from tests.console.defender_client import bundle_fields, enrol, next_of, open_defender

RECORDS = [
    {"t": 1.0, "kind": "exec", "pid": 100, "ppid": 1, "exe": "/usr/bin/python3", "verdict": "allow"},
    {"t": 1.1, "kind": "fork", "pid": 100, "ppid": 1, "verdict": "allow"},
    {"t": 1.2, "kind": "exec", "pid": 101, "ppid": 100, "exe": "/usr/bin/dash", "verdict": "alert"},
    {"t": 1.3, "kind": "audit", "pid": 101, "type": "process", "control": "processes.deny",
     "effect": "alert", "message": "shell"},
    {"t": 1.4, "kind": "fork", "pid": 101, "ppid": 100, "verdict": "allow"},
    {"t": 1.5, "kind": "exec", "pid": 102, "ppid": 101, "exe": "/usr/bin/curl", "verdict": "allow"},
    {"t": 1.6, "kind": "exec", "pid": 103, "ppid": 100, "exe": "/usr/bin/true", "verdict": "allow"},
    "a line some older defender sent",
]  # fmt: skip


def test_process_tree_of_an_incident(any_console):
    token = bundle_fields(any_console.install_bundle())["enrolment_token"]
    app = "tree-" + uuid.uuid4().hex[:6]

    async def scenario() -> tuple[dict, dict]:
        ident = await enrol(any_console.ws_address, any_console.ca_pem, token, requested_id=app)
        conn, _ = await open_defender(any_console.ws_address, any_console.ca_pem, ident, app_name=app)

        async def answer(n: int) -> None:
            for _ in range(n):
                cmd = await next_of(conn, p.Command)
                assert cmd.name == "upload_forensics"
                await conn.send(p.dump(p.CommandResult(id=cmd.id, ok=True, data={"records": RECORDS})))

        responder = asyncio.create_task(answer(2))
        with any_console.api() as c:
            whole = await asyncio.to_thread(c.get, f"/defenders/{ident.defender_id}/forensics/tree")
            branch = await asyncio.to_thread(
                c.get, f"/defenders/{ident.defender_id}/forensics/tree", params={"pid": 102}
            )
        await responder
        await conn.close()
        assert whole.status_code == 200 and branch.status_code == 200, whole.text
        return whole.json(), branch.json()

    whole, branch = asyncio.run(scenario())
    (root,) = whole["tree"]
    assert root["pid"] == 100 and [c["pid"] for c in root["children"]] == [101, 103]
    shell = root["children"][0]
    assert shell["execs"][0]["exe"] == "/usr/bin/dash" and shell["audits"][0]["control"] == "processes.deny"
    assert shell["children"][0]["pid"] == 102
    (top,) = branch["tree"]  # only the way down to 102: 103 is left out
    assert top["pid"] == 100 and [c["pid"] for c in top["children"]] == [101]
    assert top["children"][0]["children"][0]["execs"][0]["exe"] == "/usr/bin/curl"
