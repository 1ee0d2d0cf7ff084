"""Console users and tokens through the admin API: who may manage them, what a listing shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from services.io import auth
from shared.db import Migration, create_tables, make_engine, migrate
from shared.models import utcnow
from tests.io.conftest import IoFactory

# every admin route, with a body it would accept from an admin
ADMIN_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/users", None),
    ("GET", "/api/v1/users/admin", None),
    ("POST", "/api/v1/users", {"username": "zed", "role": "admin"}),
    ("PATCH", "/api/v1/users/admin", {"disabled": True}),
    ("POST", "/api/v1/users/admin/tokens", {"label": "mine now"}),
    ("DELETE", "/api/v1/tokens/1", None),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_admin_creates_issues_and_revokes(make_io: IoFactory) -> None:
    async with make_io(io={"loopback_trust": False}) as io:
        admin = bearer(io.admin_token())
        created = await io.http.post(
            "/api/v1/users",
            json={"username": "alice", "role": "operator", "token_label": "first"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        first = created.json()
        assert first["role"] == "operator" and first["token"].startswith("cxm_")
        issued = await io.http.post(
            "/api/v1/users/alice/tokens", json={"label": "laptop"}, headers=admin
        )
        assert issued.status_code == 201, issued.text
        second = issued.json()
        me = await io.http.get("/api/v1/auth/me", headers=bearer(second["token"]))
        assert me.json() == {"username": "alice", "role": "operator", "via": "token"}

        alice = (await io.http.get("/api/v1/users/alice", headers=admin)).json()
        assert alice["role"] == "operator" and alice["created_by"] == "admin"
        tokens = {t["id"]: t for t in alice["tokens"]}
        assert tokens[first["id"]]["label"] == "first"
        assert tokens[first["id"]]["last_used_at"] is None
        assert tokens[second["id"]]["created_by"] == "admin"
        assert tokens[second["id"]]["last_used_at"] is not None

        revoked = await io.http.delete(f"/api/v1/tokens/{second['id']}", headers=admin)
        assert revoked.status_code == 204
        refused = await io.http.get("/api/v1/auth/me", headers=bearer(second["token"]))
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        assert (await io.http.get("/api/v1/tickets", headers=bearer(first["token"]))).is_success
        again = await io.http.delete(f"/api/v1/tokens/{second['id']}", headers=admin)
        assert again.status_code == 404
        alice = (await io.http.get("/api/v1/users/alice", headers=admin)).json()
        gone = next(t for t in alice["tokens"] if t["id"] == second["id"])
        assert gone["revoked"] and gone["revoked_by"] == "admin" and gone["revoked_at"]


async def test_viewer_operator_and_loopback_are_refused(make_io: IoFactory) -> None:
    async with make_io() as io:
        viewer = await io.user("vera", "viewer")
        operator = await io.user("otto", "operator")
        for who in (viewer, operator, {}):  # no token on loopback: the local operator
            for method, path, body in ADMIN_ONLY:
                response = await io.http.request(method, path, json=body, headers=who)
                assert response.status_code == 403, (method, path, who, response.text)
                assert "needs admin" in response.json()["detail"]
        listed = (await io.http.get("/api/v1/users", headers=bearer(io.admin_token()))).json()
        assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
            ("admin", "admin", False),
            ("otto", "operator", False),
            ("vera", "viewer", False),
        ]
        assert [len(u["tokens"]) for u in listed] == [1, 1, 1]
        assert not listed[0]["tokens"][0]["revoked"]


async def test_duplicates_and_bad_input_are_named(make_io: IoFactory) -> None:
    async with make_io() as io:
        admin = bearer(io.admin_token())
        await io.user("alice", "operator")
        duplicate = await io.http.post(
            "/api/v1/users", json={"username": "alice", "role": "viewer"}, headers=admin
        )
        assert duplicate.status_code == 409
        assert duplicate.json()["detail"] == "user 'alice' already exists"
        bad_name = await io.http.post(
            "/api/v1/users", json={"username": "al ice", "role": "viewer"}, headers=admin
        )
        assert bad_name.status_code == 422
        assert bad_name.json()["detail"][0]["msg"].startswith("username 'al ice' is not valid")
        bad_role = await io.http.post(
            "/api/v1/users", json={"username": "bob", "role": "root"}, headers=admin
        )
        assert bad_role.status_code == 422 and bad_role.json()["detail"][0]["loc"][-1] == "role"
        long_label = await io.http.post(
            "/api/v1/users/alice/tokens", json={"label": "x" * 101}, headers=admin
        )
        assert long_label.status_code == 422
        for method, path in (
            ("POST", "/api/v1/users/nobody/tokens"),
            ("PATCH", "/api/v1/users/nobody"),
            ("GET", "/api/v1/users/nobody"),
        ):
            response = await io.http.request(method, path, json={}, headers=admin)
            assert response.status_code == 404 and "nobody" in response.json()["detail"]
        alice = (await io.http.get("/api/v1/users/alice", headers=admin)).json()
        assert alice["role"] == "operator" and len(alice["tokens"]) == 1


async def test_token_secrets_never_listed(make_io: IoFactory) -> None:
    async with make_io() as io:
        admin = bearer(io.admin_token())
        created = (
            await io.http.post("/api/v1/users", json={"username": "alice"}, headers=admin)
        ).json()
        issued = (await io.http.post("/api/v1/users/alice/tokens", json={}, headers=admin)).json()
        answers = [
            await io.http.get("/api/v1/users", headers=admin),
            await io.http.get("/api/v1/users/alice", headers=admin),
            await io.http.patch("/api/v1/users/alice", json={"role": "operator"}, headers=admin),
        ]
        text = "".join(a.text for a in answers)
        for secret in (io.admin_token(), created["token"], issued["token"]):
            assert secret not in text and auth.hash_token(secret) not in text
        assert "token_hash" not in text and '"token"' not in text


async def test_role_change_and_disable(make_io: IoFactory) -> None:
    async with make_io() as io:
        admin = bearer(io.admin_token())
        alice = await io.user("alice", "operator")
        changed = await io.http.patch("/api/v1/users/alice", json={"role": "viewer"}, headers=admin)
        assert changed.json()["role"] == "viewer" and changed.json()["updated_by"] == "admin"
        assert (await io.http.get("/api/v1/auth/me", headers=alice)).json()["role"] == "viewer"
        disabled = await io.http.patch(
            "/api/v1/users/alice", json={"disabled": True}, headers=admin
        )
        assert disabled.json()["disabled"] is True
        assert (await io.http.get("/api/v1/auth/me", headers=alice)).status_code == 401
        await io.http.patch("/api/v1/users/alice", json={"disabled": False}, headers=admin)
        assert (await io.http.get("/api/v1/auth/me", headers=alice)).status_code == 200

        # an admin cannot lock themselves out; another admin can change them
        for body in ({"role": "operator"}, {"disabled": True}):
            self_change = await io.http.patch("/api/v1/users/admin", json=body, headers=admin)
            assert self_change.status_code == 409 and "own account" in self_change.json()["detail"]
        assert (await io.http.patch("/api/v1/users/admin", json={}, headers=admin)).is_success


async def test_older_database_gets_the_audit_columns(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'io.db'}")
    try:
        before = sa.MetaData()  # the tables as migration 4 first created them
        for table in auth.metadata.tables.values():
            added = auth.AUDIT_COLUMNS[table.name]
            sa.Table(table.name, before, *(c._copy() for c in table.columns if c.name not in added))
        await migrate(engine, "io", [Migration(4, "old", create_tables(before, *before.tables))])
        async with engine.begin() as conn:
            await conn.execute(
                before.tables["io_users"]
                .insert()
                .values(username="olga", role="viewer", disabled=False, created_at=utcnow())
            )
        assert await migrate(engine, "io", auth.MIGRATIONS) == [5]
        issued = await auth.issue_token(engine, username="olga", actor="admin")
        assert await auth.revoke_token(engine, issued["id"], actor="admin")
        [olga] = await auth.list_users(engine)
        assert olga["created_by"] is None
        assert olga["tokens"][0]["revoked_by"] == "admin"
    finally:
        await engine.dispose()
