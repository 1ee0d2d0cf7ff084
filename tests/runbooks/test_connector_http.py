"""The HTTP connector against a real HTTP server (uvicorn on a loopback port, in this loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.orchestrator.runbooks.actions import HttpRequest
from services.orchestrator.runbooks.inventory import ConnectionCreate
from services.orchestrator.runbooks.vault import CredentialCreate
from tests.runbooks.helpers import Runbooks
from tests.support import free_port

TOKEN = "api-token-never-logged-0b7a"


def make_app(release: asyncio.Event, seen: list[str]) -> Starlette:
    """An API that needs the bearer token everywhere (and never echoes it)."""

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def root(request: Request) -> Response:
        return JSONResponse({"ok": True}, status_code=200 if authorised(request) else 401)

    async def status(request: Request) -> Response:
        if not authorised(request):
            return Response(status_code=401)
        return Response(f"status {request.path_params['code']}", request.path_params["code"])

    async def echo(request: Request) -> Response:
        seen.append(request.url.path)
        return JSONResponse({"got": await request.json()})

    async def big(request: Request) -> Response:
        return Response(b"b" * 100_000)

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response("late")

    return Starlette(
        routes=[
            Route("/", root),
            Route("/status/{code:int}", status),
            Route("/echo/{rest:path}", echo, methods=["POST"]),
            Route("/big", big),
            Route("/slow", slow),
        ]
    )


@pytest.fixture
async def api(runbooks: Runbooks) -> AsyncIterator[list[str]]:
    """The server, connection ``api`` (with the token) and ``anon`` (without)."""
    release = asyncio.Event()
    seen: list[str] = []
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(release, seen),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it failed to start: say why
        await asyncio.sleep(0.02)
    await runbooks.vault.create(
        CredentialCreate(name="api-token", kind="token", secret=SecretStr(TOKEN))
    )
    for name, credential in (("api", "api-token"), ("anon", None)):
        await runbooks.inventory.create(
            ConnectionCreate(
                name=name,
                environment="dev",
                connector="http",
                url=f"http://127.0.0.1:{port}/",
                credential=credential,
            )
        )
    try:
        yield seen
    finally:
        release.set()
        server.should_exit = True
        await task


async def test_bearer_token_and_status(
    runbooks: Runbooks, api: list[str], log_text: Callable[[], str]
) -> None:
    pool = runbooks.pool
    ok = await pool.run("api", HttpRequest("GET", "/status/200"))
    assert ok.status == 200 and ok.output == "status 200" and ok.error is None
    denied = await pool.run("anon", HttpRequest("GET", "/status/200"))
    assert denied.status == 401 and not denied.transient
    assert TOKEN not in log_text()


@pytest.mark.parametrize(
    ("code", "transient"), [(502, True), (503, True), (504, True), (404, False)]
)
async def test_transient_statuses(
    runbooks: Runbooks, api: list[str], code: int, transient: bool
) -> None:
    out = await runbooks.pool.run("api", HttpRequest("GET", f"/status/{code}"))
    assert out.status == code and out.transient is transient and out.error is None


async def test_json_body_and_encoded_path(runbooks: Runbooks, api: list[str]) -> None:
    body = {"host": "edge-1; rm -rf /", "n": 2}
    out = await runbooks.pool.run("api", HttpRequest("POST", "/echo/a%20b%2Fc", body))
    assert out.status == 200 and '"host":"edge-1; rm -rf /"' in out.output
    assert api == ["/echo/a b/c"]


async def test_body_is_capped(runbooks: Runbooks, api: list[str]) -> None:
    cap = runbooks.settings.output_cap_bytes
    out = await runbooks.pool.run("api", HttpRequest("GET", "/big"))
    assert out.status == 200
    assert out.output == "b" * cap + f"\n[output truncated at {cap} bytes]"


async def test_timeout(runbooks: Runbooks, api: list[str]) -> None:
    out = await runbooks.pool.run("api", HttpRequest("GET", "/slow"), timeout_s=0.5)
    assert out.timed_out and out.status is None and not out.transient
    assert out.error is not None and out.error.startswith("timeout:")


async def test_path_must_stay_on_the_connection(runbooks: Runbooks, api: list[str]) -> None:
    for path in ("http://169.254.169.254/latest", "//evil.example/x"):
        out = await runbooks.pool.run("api", HttpRequest("GET", path))
        assert out.error is not None and out.error.startswith("invalid:"), path


async def test_connection_test(runbooks: Runbooks, api: list[str]) -> None:
    for name, ok, kind in (("api", True, None), ("anon", False, "auth")):
        connection = await runbooks.inventory.get(name)
        assert connection is not None
        result = await runbooks.pool.test(connection)
        assert (result.ok, result.kind) == (ok, kind), result.detail
        assert TOKEN not in result.detail


async def test_unreachable_targets(runbooks: Runbooks) -> None:
    for name, url, kind, transient in (
        ("closed", f"http://127.0.0.1:{free_port()}/", "refused", True),
        ("nxdomain", "http://no-such-host.invalid/", "dns", False),
    ):
        await runbooks.inventory.create(
            ConnectionCreate(name=name, environment="dev", connector="http", url=url)
        )
        out = await runbooks.pool.run(name, HttpRequest("GET", "/"))
        assert out.error is not None and out.error.startswith(f"{kind}:"), out.error
        assert out.transient is transient
        connection = await runbooks.inventory.get(name)
        assert connection is not None
        assert (await runbooks.pool.test(connection)).kind == kind
