"""Users, roles, tokens, Basic/Bearer auth and the admin audit trail, against a real console."""

from __future__ import annotations

import uuid


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_unauthenticated_and_wrong_password(console):
    with console.api() as c:
        assert c.get("/_ping", auth=None).status_code == 200
        r = c.get("/policies/runtime/app-embedded", auth=None)
        assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
        assert c.get("/defenders", auth=("admin", "wrong")).status_code == 401
        assert c.get("/defenders", auth=("nobody", "x")).status_code == 401
        bad = c.get("/defenders", auth=None, headers={"authorization": "Basic !!!notbase64"})
        assert bad.status_code == 401
        assert c.get("/defenders", auth=None, headers={"authorization": "Bearer nope"}).status_code == 401


def test_authenticate_returns_bearer_token(console):
    with console.api() as c:
        r = c.post("/authenticate", json={"username": "admin", "password": console.admin_password}, auth=None)
        assert r.status_code == 200
        token = r.json()["token"]
        assert (
            c.post("/authenticate", json={"username": "admin", "password": "x"}, auth=None).status_code == 401
        )
        assert c.post("/authenticate", json={"username": "admin"}, auth=None).status_code == 422
    with console.api(token=token) as t:
        assert t.get("/version").status_code == 200


def test_roles(console):
    auditor, operator = _name("aud"), _name("op")
    console.create_user(auditor, "auditor-pass-1", "auditor")
    console.create_user(operator, "operator-pass-1", "operator")
    with console.api(auditor, "auditor-pass-1") as a:
        assert a.get("/policies/runtime/app-embedded").status_code == 200
        assert a.get("/audits/runtime/app-embedded").status_code == 200
        assert a.put("/policies/runtime/app-embedded", json={"rules": []}).status_code == 403
        assert a.get("/defenders/install-bundle").status_code == 403
        assert a.post("/scans", json={"digest": "sha256:x", "verdict": "pass"}).status_code == 403
        assert a.get("/users").status_code == 403
    with console.api(operator, "operator-pass-1") as o:
        assert o.put("/policies/runtime/app-embedded", json={"rules": []}).status_code == 200
        assert o.get("/users").status_code == 403
        assert (
            o.post("/users", json={"username": "x1", "password": "password1", "role": "admin"}).status_code
            == 403
        )
        assert o.get("/settings/alerts").status_code == 403


def test_user_crud_and_mgmt_audit(console):
    user = _name("u")
    with console.api() as c:
        r = c.post("/users", json={"username": user, "password": "first-password", "role": "auditor"})
        assert r.status_code == 201 and r.json()["role"] == "auditor"
        assert (
            c.post(
                "/users", json={"username": user, "password": "first-password", "role": "auditor"}
            ).status_code
            == 409
        )
        assert (
            c.put(f"/users/{user}", json={"role": "operator", "password": "second-password"}).status_code
            == 200
        )
        with console.api(user, "second-password") as u:
            assert u.put("/policies/runtime/app-embedded", json={"rules": []}).status_code == 200
        assert c.delete(f"/users/{user}").status_code == 204
        assert c.delete(f"/users/{user}").status_code == 404
        with console.api(user, "second-password") as u:
            assert u.get("/version").status_code == 401
        assert c.delete("/users/admin").status_code == 409  # the last admin stays
        trail = c.get("/audits/mgmt", params={"limit": 1000}).json()
        actions = {(e["action"], e["target"]) for e in trail}
        assert {("user.create", user), ("user.update", user), ("user.delete", user)} <= actions
        upd = next(e for e in trail if e["action"] == "user.update" and e["target"] == user)
        assert "second-password" not in str(upd)
        assert any(e["action"] == "policy.runtime.update" for e in trail)


def test_api_tokens(console):
    with console.api() as c:
        r = c.post("/tokens", json={"name": "ci", "ttl_days": 1})
        assert r.status_code == 201
        tok = r.json()
        with console.api(token=tok["token"]) as t:
            assert t.get("/version").status_code == 200
        assert any(x["id"] == tok["id"] for x in c.get("/tokens").json())
        assert c.delete(f"/tokens/{tok['id']}").status_code == 204
        with console.api(token=tok["token"]) as t:
            assert t.get("/version").status_code == 401


def test_password_never_stored_in_clear(console):
    stored = b"".join(
        f.read_bytes() for f in console.data_dir.iterdir() if f.is_file() and f.name != "console.log"
    )
    assert console.admin_password.encode() not in stored
    assert b"$argon2" in stored
