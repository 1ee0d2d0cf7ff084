"""Route by route, what every agent asks of its caller (``docs/security.md``).

Each agent is built in-process with a mesh token, and every route it has (``app.routes``:
OpenAPI's operations and the ones left out of it, both agent cards, mounts) is called for each
of its methods without credentials and, where it applies, with the wrong and the right one:

- the mesh token (the default): 401 without or with a wrong one, not 401 with it;
- IO's user routes: 401 without a token and with the mesh token, not 401/403 with an admin's;
- webhooks (a source's own secret): 401 without;
- the lab's CNC/PCA emulation (their own logins): refused (400/401/403) without;
- open on purpose: answered without anything.

What is not the mesh token must be listed in :func:`expected` below, and every route's
declaration must agree with it: a route nobody classified is held to the mesh token, so a new
route cannot be open by accident, and a new exemption shows up here for review. Every client
here is bare: no :class:`tests.support.MeshAuth`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import Mount

from shared.agent import OPEN_PATHS, Access, AgentSpec, RouteAuth, route_table
from shared.settings import AGENT_PORTS, Settings

TOKEN = "test-mesh-token"
MESH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-mesh-token"}
DEAD = "http://127.0.0.1:9"
"""Where every peer, CNC and PCA is: nothing listens, so a handler that calls out fails fast."""

CORRELATOR_SOURCES = {
    ("POST", "/api/v1/tickets/webhook/{source}"),
    ("POST", "/api/v1/tickets/upload-csv"),
    ("POST", "/api/v1/alerts"),
    ("POST", "/api/v1/tickets/demo/ticket"),
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/{silence_id}"),
}
IO_CONSOLE = {("GET", "/"), ("GET", "/favicon.ico"), ("GET", "/api/v1/console/config")}
PCA = {
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v2/monitored-objects"),
    ("POST", "/api/v3/metrics/aggregate"),
    ("GET", "/api/v2/policies/alerting"),
}


def expected(agent: str, method: str, path: str) -> Access:
    """What ``agent``'s route is meant to ask for: the reviewed table of exemptions."""
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return Access.OPEN
    route = (method, path)
    if agent == "correlator" and route in CORRELATOR_SOURCES:
        return Access.WEBHOOK
    if agent == "notify" and route == ("POST", "/api/v1/servicenow/webhook"):
        return Access.WEBHOOK
    if agent == "io":
        if route in IO_CONSOLE or (method, path) == ("MOUNT", "/static"):
            return Access.OPEN
        if path.startswith("/api/v1/"):
            return Access.USER
    if agent == "lab":
        if path.startswith("/crosswork/") or route in PCA:
            return Access.CONTROLLER
        if path.startswith("/lab/"):
            return Access.OPEN
    return Access.MESH


SAMPLES = {"source": "pca"}
"""Path parameters that must be valid for the handler to reach its auth check."""
STREAMS = {("io", "/api/v1/stream")}
"""Answers that never end (server-sent events): called without credentials only."""
LOGOUT = ("DELETE", "/crosswork/sso/v1/tickets/x")
"""CNC's logout: the TGT in the path is the credential, and an unknown one ends nothing (200)."""


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: SAMPLES.get(m.group(1), "x"), path)


def agent_settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, time_scale=0.01, mesh_token=TOKEN, port=8999)
    urls = {f"{name}_url": DEAD for name in AGENT_PORTS}
    return settings.model_copy(update={"mesh_retries": 0, "cnc_url": DEAD, "pca_url": DEAD, **urls})


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and a bare client: no mesh token unless a request sends it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("agent", tuple(AGENT_PORTS))
async def test_every_route_asks_for_what_it_is_declared_to(agent: str, tmp_path: Path) -> None:
    app: FastAPI = importlib.import_module(f"services.{agent}.app").create_app(
        agent_settings(tmp_path)
    )
    table = route_table(app)
    walked: set[tuple[str, str]] = set()
    problems: list[str] = []
    async with serving(app) as client:
        admin = {}
        if agent == "io":  # IO's bootstrap admin, whose token IO writes on first start
            token = (tmp_path / "io-admin-token").read_text().strip()
            admin = {"Authorization": f"Bearer {token}"}
        for route, auth in table:
            is_mount = isinstance(route.original_route, Mount)
            methods = ["MOUNT"] if is_mount else sorted(route.methods or ())
            path = route.path or ""
            for method in methods:
                walked.add((method, re.sub(r"\{(\w+):\w+\}", r"{\1}", path)))
                declared = auth.access if auth else Access.MESH
                want = expected(agent, method, path)
                label = f"{agent} {method} {path}"
                if declared is not want:
                    problems.append(f"{label}: declared {declared}, the table says {want}")
                    continue
                verb = "GET" if is_mount else method
                url = concrete(path) + ("/favicon.svg" if is_mount else "")
                problems += await check(client, agent, verb, url, declared, admin, label)
    assert not problems, "\n".join(problems)

    if agent == "lab":  # no mesh middleware there: every route must say what it asks
        assert all(auth is not None for _, auth in table)
    openapi = app.openapi()
    operations = {
        (method.upper(), path) for path, item in openapi["paths"].items() for method in item
    }
    assert operations <= walked, f"OpenAPI operations not walked: {operations - walked}"


async def check(
    client: httpx.AsyncClient,
    agent: str,
    method: str,
    url: str,
    access: Access,
    admin: dict[str, str],
    label: str,
) -> list[str]:
    """What is wrong with one route+method's answers, if anything."""
    bare = await call(client, method, url)
    problems = []

    def expect(ok: bool, what: str, response: httpx.Response) -> None:
        if not ok:
            problems.append(f"{label}: {what}, got {response.status_code} {response.text[:200]}")

    if access is Access.MESH:
        expect(bare.status_code == 401, "401 without the mesh token", bare)
        expect("CXM_MESH_TOKEN" in bare.text, "names CXM_MESH_TOKEN", bare)
        wrong = await call(client, method, url, WRONG)
        expect(wrong.status_code == 401, "401 with a wrong token", wrong)
        right = await call(client, method, url, MESH)
        expect(right.status_code not in (401, 403), "past auth with the mesh token", right)
    elif access is Access.OPEN:
        expect(bare.status_code not in (401, 403), "answered without credentials", bare)
    elif access is Access.USER:
        expect(bare.status_code == 401, "401 without a user token", bare)
        mesh = await call(client, method, url, MESH)
        expect(mesh.status_code == 401, "401 with the mesh token (not a user token)", mesh)
        if (agent, url) not in STREAMS:
            user = await call(client, method, url, admin)
            expect(user.status_code not in (401, 403), "past auth with an admin's token", user)
    elif access is Access.WEBHOOK:
        expect(bare.status_code == 401, "401 without the source's credential", bare)
        wrong = await call(client, method, url, WRONG)
        expect(wrong.status_code == 401, "401 with a wrong bearer", wrong)
    elif access is Access.CONTROLLER and (method, url) != LOGOUT:
        # a login answers 400 to a form without its fields, 401 to wrong credentials
        expect(bare.status_code in (400, 401, 403), "refused without the controller's login", bare)
    return problems


# --- the mechanism, on an agent made up for it -------------------------------------------------


def made_up_app(tmp_path: Path) -> FastAPI:
    spec = AgentSpec("made-up", "Made up", "routes of every kind")
    plain = APIRouter(prefix="/api/v1")

    @plain.get("/things")
    async def things() -> list[str]:
        return []

    @plain.post("/hook", dependencies=[RouteAuth(Access.WEBHOOK, "its own secret").depends])
    async def hook() -> dict[str, str]:
        return {"checked": "by the route itself"}

    users = APIRouter(prefix="/api/v2")

    @users.get("/me")
    async def me() -> dict[str, str]:
        return {"who": "checked by the route itself"}

    spec.include_router(plain)
    spec.include_router(users, auth=RouteAuth(Access.USER, "a user token"))
    app = spec.create_app(Settings(data_dir=tmp_path, mesh_token=TOKEN, port=8999))

    async def files(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not reached in these tests")

    app.mount("/files", files)
    return app


async def test_a_route_nobody_classified_needs_the_mesh_token(tmp_path: Path) -> None:
    async with serving(made_up_app(tmp_path)) as client:
        assert (await client.get("/api/v1/things")).status_code == 401
        assert (await client.get("/api/v1/things", headers=MESH)).status_code == 200
        assert (await client.post("/api/v1/hook")).status_code == 200
        assert (await client.get("/api/v2/me")).status_code == 200
        # an unknown path or a mount nobody marked: 401, not 404
        assert (await client.get("/nowhere")).status_code == 401
        assert (await client.get("/files/a")).status_code == 401
        # another method is judged by the route that answers it (a 405, no handler runs)
        assert (await client.post("/health")).status_code == 405
        assert (await client.get("/api/v1/hook")).status_code == 405


async def test_loopback_callers_get_no_exemption(tmp_path: Path) -> None:
    """A caller on 127.0.0.1 asking for http://localhost is still asked for the token."""
    app = made_up_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            assert (await c.get("/api/v1/things")).status_code == 401
            assert (await c.post("/a2a/tasks", json={})).status_code == 401


def test_the_mesh_token_is_not_declared_and_exemptions_say_why() -> None:
    with pytest.raises(ValueError, match="default"):
        RouteAuth(Access.MESH, "redundant")
    with pytest.raises(ValueError, match="why"):
        RouteAuth(Access.OPEN, " ")
