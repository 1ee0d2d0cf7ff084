"""CNC's ticket-granting login: TGT → JWT, renewal before ``exp``, 403 re-login, TGT delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.southbound import NSO, CncClient
from tests.southbound.conftest import NOW, TGT, Clock, make_cnc
from tests.southbound.payloads import SERVICE_URL, jwt

PATCH_L3 = f"{NSO}/ietf-l3vpn-ntw:l3vpn-ntw/vpn-services"


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


async def call(cnc: CncClient) -> None:
    """One authenticated CNC call (a TE-service mapping PATCH)."""
    await cnc.map_services([("vpn-001", "l3vpn")], 1001)


def tokens(clock: Clock, *, ttl: float = 28800) -> Callable[[httpx.Request], httpx.Response]:
    """A JWT route answer that hands out a new token each time (sub counts them)."""
    issued = iter(range(1, 1000))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=jwt(clock.now + ttl, sub=f"cxm-{next(issued)}"))

    return answer


async def test_login_is_tgt_then_jwt_then_bearer(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = cnc_router.patch(PATCH_L3).respond(204)
    await call(cnc)
    tgt = cnc_router.routes["tgt"].calls.last.request
    assert form(tgt) == {"username": ["cxm"], "password": ["cxm-lab"]}
    service = cnc_router.routes["jwt"].calls.last.request
    assert form(service) == {"service": [SERVICE_URL]}
    bearer = route.calls.last.request.headers["Authorization"]
    assert bearer == f"Bearer {jwt(NOW + 28800)}"
    assert cnc.logins == 1


async def test_the_default_service_is_the_cnc_hosts_app_dashboard(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    client = CncClient(
        "https://cnc.example:30603",
        username="cxm",
        password="cxm-lab",
        transport=httpx.MockTransport(cnc_router.async_handler),
        clock=clock,
    )
    assert client.service_url == "https://cnc.example:30603/app-dashboard"
    await client.aclose()


async def test_jwt_is_renewed_refresh_s_before_exp(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    cnc_router.routes["jwt"].mock(side_effect=tokens(clock))
    route = cnc_router.patch(PATCH_L3).respond(204)
    cnc = make_cnc(cnc_router, clock, refresh_s=300)
    await call(cnc)
    first = route.calls.last.request.headers["Authorization"]
    clock.now += 28800 - 301
    await call(cnc)
    assert route.calls.last.request.headers["Authorization"] == first
    assert cnc_router.routes["jwt"].call_count == 1
    clock.now += 2  # now inside the refresh margin
    await call(cnc)
    assert route.calls.last.request.headers["Authorization"] != first
    assert cnc_router.routes["jwt"].call_count == 2
    assert cnc_router.routes["tgt"].call_count == 1  # the TGT serves the renewal
    await cnc.aclose()


async def test_a_jwt_shorter_than_the_margin_is_renewed_at_half_life(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    cnc_router.routes["jwt"].mock(side_effect=tokens(clock, ttl=10))
    cnc_router.patch(PATCH_L3).respond(204)
    cnc = make_cnc(cnc_router, clock, refresh_s=300)
    await call(cnc)
    await call(cnc)
    assert cnc_router.routes["jwt"].call_count == 1  # not a login per call
    clock.now += 5
    await call(cnc)
    assert cnc_router.routes["jwt"].call_count == 2
    await cnc.aclose()


async def test_403_unauthorized_request_logs_in_again_and_retries_once(
    cnc: CncClient, cnc_router: respx.MockRouter, clock: Clock
) -> None:
    cnc_router.routes["jwt"].mock(side_effect=tokens(clock))
    route = cnc_router.patch(PATCH_L3).mock(
        side_effect=[httpx.Response(403, text="Unauthorized request"), httpx.Response(204)]
    )
    await call(cnc)
    assert route.call_count == 2
    first, second = (c.request.headers["Authorization"] for c in route.calls)
    assert first != second
    assert cnc_router.routes["jwt"].call_count == 2
    assert cnc_router.routes["tgt"].call_count == 1


async def test_403_with_an_expired_tgt_gets_a_new_tgt(
    cnc: CncClient, cnc_router: respx.MockRouter, clock: Clock
) -> None:
    good = tokens(clock)
    answers = iter(["ok", "expired", "ok"])

    def service_ticket(request: httpx.Request) -> httpx.Response:
        if next(answers) == "expired":
            return httpx.Response(401, text="TGT expired")
        return good(request)

    cnc_router.routes["jwt"].mock(side_effect=service_ticket)
    route = cnc_router.patch(PATCH_L3).mock(
        side_effect=[httpx.Response(403, text="Unauthorized request"), httpx.Response(204)]
    )
    await call(cnc)
    assert route.call_count == 2
    assert cnc_router.routes["tgt"].call_count == 2
    assert cnc.logins == 2


async def test_a_second_403_is_final(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    route = cnc_router.patch(PATCH_L3).respond(403, text="Unauthorized request")
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert not caught.value.transient
    assert route.call_count == 2


async def test_malformed_input_empty_500_is_final_and_not_retried(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    route = cnc_router.patch(PATCH_L3).respond(500, content=b"")
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert not caught.value.transient
    assert "empty body" in str(caught.value)
    assert route.call_count == 1


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, text="Service Unavailable"),
        httpx.Response(500, text="internal error"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(429, text="slow down"),
    ],
)
async def test_busy_answers_are_transient(
    cnc: CncClient, cnc_router: respx.MockRouter, answer: httpx.Response
) -> None:
    cnc_router.patch(PATCH_L3).mock(return_value=answer)
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert caught.value.transient


async def test_unreachable_is_transient(cnc: CncClient, cnc_router: respx.MockRouter) -> None:
    cnc_router.patch(PATCH_L3).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert caught.value.transient


async def test_wrong_credentials_are_final_and_quote_no_secret(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.routes["tgt"].respond(401, text="Maximum sessions reached")
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert not caught.value.transient
    assert "Maximum sessions reached" in str(caught.value)
    assert "cxm-lab" not in str(caught.value)


async def test_a_refused_fresh_tgt_names_no_ticket(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.routes["jwt"].respond(401, text="no")
    with pytest.raises(SouthboundError) as caught:
        await call(cnc)
    assert TGT not in str(caught.value)


async def test_aclose_deletes_the_tgt(cnc_router: respx.MockRouter, clock: Clock) -> None:
    cnc_router.patch(PATCH_L3).respond(204)
    cnc = make_cnc(cnc_router, clock)
    await call(cnc)
    await cnc.aclose()
    assert cnc_router.routes["logout"].call_count == 1
    assert cnc.http.is_closed


async def test_aclose_without_a_login_deletes_nothing(
    cnc_router: respx.MockRouter, clock: Clock
) -> None:
    cnc = make_cnc(cnc_router, clock)
    await cnc.aclose()
    assert cnc_router.routes["logout"].call_count == 0


async def test_aclose_survives_a_failed_delete(cnc_router: respx.MockRouter, clock: Clock) -> None:
    cnc_router.patch(PATCH_L3).respond(204)
    cnc_router.routes["logout"].mock(side_effect=httpx.ConnectError("gone"))
    cnc = make_cnc(cnc_router, clock)
    await call(cnc)
    await cnc.aclose()
    assert cnc.http.is_closed


async def test_concurrent_callers_share_one_login(
    cnc: CncClient, cnc_router: respx.MockRouter
) -> None:
    cnc_router.patch(PATCH_L3).respond(204)
    await asyncio.gather(*(call(cnc) for _ in range(20)))
    assert cnc_router.routes["tgt"].call_count == 1
    assert cnc_router.routes["jwt"].call_count == 1


async def test_concurrent_403s_share_one_relogin(
    cnc: CncClient, cnc_router: respx.MockRouter, clock: Clock
) -> None:
    cnc_router.routes["jwt"].mock(side_effect=tokens(clock))
    first = jwt(clock.now + 28800, sub="cxm-1")

    def patch(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {first}":
            return httpx.Response(403, text="Unauthorized request")
        return httpx.Response(204)

    cnc_router.patch(PATCH_L3).mock(side_effect=patch)
    await call(cnc)  # logs in (token 1), 403, re-login (token 2)
    assert cnc_router.routes["jwt"].call_count == 2
    cnc._jwt = first  # every caller now holds the stale token at once
    await asyncio.gather(*(call(cnc) for _ in range(10)))
    assert cnc_router.routes["jwt"].call_count == 3
    assert cnc_router.routes["tgt"].call_count == 1


async def test_no_secret_reaches_the_logs(
    cnc_router: respx.MockRouter,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("DEBUG")
    cnc_router.routes["jwt"].mock(side_effect=tokens(clock))
    cnc_router.patch(PATCH_L3).mock(
        side_effect=[httpx.Response(403, text="Unauthorized request"), httpx.Response(204)]
    )
    cnc_router.routes["logout"].respond(500, text="oops")
    cnc = make_cnc(cnc_router, clock)
    await call(cnc)
    await cnc.aclose()
    logged = caplog.text + capsys.readouterr().out
    for secret in ("cxm-lab", TGT, jwt(clock.now + 28800, sub="cxm-1").split(".")[1]):
        assert secret not in logged


async def test_a_killed_process_s_session_is_taken_up_by_the_next(
    cnc_router: respx.MockRouter, clock: Clock, tmp_path: Any
) -> None:
    """Issue 15: kill -9 never deletes the TGT, so each restart opened one more CNC session
    until CNC refused every login ("Maximum sessions reached"). The session file carries it."""
    cnc_router.patch(PATCH_L3).respond(204)
    session = tmp_path / "cnc-session-tunnel"
    first = make_cnc(cnc_router, clock, session_file=session)
    await call(first)
    assert session.stat().st_mode & 0o077 == 0
    kept = session.read_bytes()
    assert TGT.encode() not in kept  # encrypted at rest
    assert first._session_cipher.decrypt(kept).decode() == TGT
    await first.http.aclose()  # killed: no aclose(), the TGT stays live on CNC
    second = make_cnc(cnc_router, clock, session_file=session)
    await call(second)
    assert cnc_router.routes["tgt"].call_count == 1  # no second session
    assert second.logins == 0
    await second.aclose()  # a clean stop ends the session and forgets it
    assert cnc_router.routes["logout"].call_count == 1
    assert not session.exists()


async def test_a_kept_session_cnc_no_longer_knows_is_replaced(
    cnc_router: respx.MockRouter, clock: Clock, tmp_path: Any
) -> None:
    cnc_router.patch(PATCH_L3).respond(204)
    cnc_router.post("/crosswork/sso/v1/tickets/TGT-old-cas").respond(401, text="expired")
    session = tmp_path / "cnc-session-tunnel"
    cnc = make_cnc(cnc_router, clock, session_file=session)
    session.write_bytes(cnc._session_cipher.encrypt(b"TGT-old-cas"))
    await call(cnc)
    assert cnc_router.calls.call_count and any(
        c.request.url.path.endswith("/TGT-old-cas") for c in cnc_router.calls
    )
    assert cnc.logins == 1
    assert cnc._session_cipher.decrypt(session.read_bytes()).decode() == TGT
    await cnc.aclose()


async def test_a_session_file_from_another_password_is_not_used(
    cnc_router: respx.MockRouter, clock: Clock, tmp_path: Any
) -> None:
    """A plain-text file, or one kept under an old password, does not decrypt: ignored, and
    the next login replaces it (nothing is sent to CNC from it)."""
    cnc_router.patch(PATCH_L3).respond(204)
    session = tmp_path / "cnc-session-tunnel"
    session.write_text("TGT-plain-text")
    cnc = make_cnc(cnc_router, clock, session_file=session)
    await call(cnc)
    assert not any("TGT-plain-text" in str(c.request.url) for c in cnc_router.calls)
    assert cnc.logins == 1
    assert cnc._session_cipher.decrypt(session.read_bytes()).decode() == TGT
    await cnc.aclose()
