"""Logins as CNC and PCA hand them out: TGT → JWT, 403/500 answers, session cap, PCA header."""

from __future__ import annotations

import base64
import json
from typing import Any

from services.lab.settings import LabSettings
from shared.settings import Settings
from tests.lab.conftest import NETWORKS, SERVICE, SSO, LabHarness

CREDENTIALS = {"username": "cxm", "password": "cxm-lab"}


def payload(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


async def test_tgt_then_jwt_then_calls(lab: LabHarness) -> None:
    tgt = await lab.client.post(SSO, data=CREDENTIALS)
    assert tgt.status_code == 201 and tgt.text.startswith("TGT-")
    assert tgt.headers["content-type"].startswith("text/plain")
    jwt = await lab.client.post(f"{SSO}/{tgt.text}", data={"service": SERVICE})
    assert jwt.status_code == 200 and jwt.text.count(".") == 2
    claims = payload(jwt.text)
    assert claims["sub"] == "cxm" and claims["exp"] > claims["iat"]
    assert claims["exp"] - claims["iat"] == 28800  # 8 h, like CNC
    ok = await lab.client.get(NETWORKS, headers={"Authorization": f"Bearer {jwt.text}"})
    assert ok.status_code == 200
    # logging out ends the session: the TGT and its JWTs stop working
    assert (await lab.client.delete(f"{SSO}/{tgt.text}")).status_code == 200
    gone = await lab.client.get(NETWORKS, headers={"Authorization": f"Bearer {jwt.text}"})
    assert (gone.status_code, gone.text) == (403, "Unauthorized request")
    again = await lab.client.post(f"{SSO}/{tgt.text}", data={"service": SERVICE})
    assert again.status_code == 401


async def test_wrong_credentials_and_unknown_tgt_are_401(lab: LabHarness) -> None:
    wrong = await lab.client.post(SSO, data={"username": "cxm", "password": "nope"})
    assert wrong.status_code == 401
    assert (await lab.client.post(SSO, data={})).status_code == 401
    unknown = await lab.client.post(f"{SSO}/TGT-9-nope-cas", data={"service": SERVICE})
    assert unknown.status_code == 401


async def test_unknown_expired_and_malformed_jwts(lab: LabHarness) -> None:
    jwt = await lab.login()
    bearer = {"Authorization": f"Bearer {jwt}"}
    assert (await lab.client.get(NETWORKS, headers=bearer)).status_code == 200
    # a forged signature, no header at all: 403 with CNC's plain-text body
    head, body, _ = jwt.split(".")
    forged = f"{head}.{body}.{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    for headers in ({"Authorization": f"Bearer {forged}"}, {}):
        response = await lab.client.get(NETWORKS, headers=headers)
        assert (response.status_code, response.text) == (403, "Unauthorized request")
    # not three parts: an empty 500
    broken = await lab.client.get(NETWORKS, headers={"Authorization": "Bearer not-a-jwt"})
    assert (broken.status_code, broken.content) == (500, b"")
    # expiry: move the lab's clock past exp
    sessions = lab.lab.sessions
    now = sessions.clock()
    sessions.clock = lambda: now + 28801
    expired = await lab.client.get(NETWORKS, headers=bearer)
    assert (expired.status_code, expired.text) == (403, "Unauthorized request")


async def test_short_jwt_lifetime_and_refresh_from_the_tgt(
    make_lab: Any, settings: Settings
) -> None:
    async with make_lab(settings, LabSettings(jwt_ttl_s=5, tgt_ttl_s=100)) as lab:
        tgt = (await lab.client.post(SSO, data=CREDENTIALS)).text
        first = (await lab.client.post(f"{SSO}/{tgt}", data={"service": SERVICE})).text
        assert payload(first)["exp"] - payload(first)["iat"] == 5
        sessions = lab.lab.sessions
        now = sessions.clock()
        sessions.clock = lambda: now + 6
        old = await lab.client.get(NETWORKS, headers={"Authorization": f"Bearer {first}"})
        assert old.status_code == 403
        fresh = (await lab.client.post(f"{SSO}/{tgt}", data={"service": SERVICE})).text
        new = await lab.client.get(NETWORKS, headers={"Authorization": f"Bearer {fresh}"})
        assert new.status_code == 200
        sessions.clock = lambda: now + 101  # the TGT itself expires
        late = await lab.client.post(f"{SSO}/{tgt}", data={"service": SERVICE})
        assert late.status_code == 401


async def test_sessions_are_capped_per_user(make_lab: Any, settings: Settings) -> None:
    async with make_lab(settings, LabSettings(max_sessions=2)) as lab:
        tgts = [(await lab.client.post(SSO, data=CREDENTIALS)).text for _ in range(2)]
        refused = await lab.client.post(SSO, data=CREDENTIALS)
        assert (refused.status_code, refused.text) == (401, "Maximum sessions reached")
        assert (await lab.client.delete(f"{SSO}/{tgts[0]}")).status_code == 200
        assert (await lab.client.post(SSO, data=CREDENTIALS)).status_code == 201
        assert (await lab.client.get("/lab/state")).json()["sessions"]["tgts"] == 2


async def test_the_lab_accepts_the_configured_credentials_only(
    make_lab: Any, settings: Settings
) -> None:
    custom = Settings.model_validate(
        {
            **settings.model_dump(),
            "cnc_username": "ops",
            "cnc_password": "s3cret",
            "pca_username": "pm",
        }
    )
    async with make_lab(custom, LabSettings()) as lab:
        assert (await lab.client.post(SSO, data=CREDENTIALS)).status_code == 401
        ok = await lab.client.post(SSO, data={"username": "ops", "password": "s3cret"})
        assert ok.status_code == 201
        assert len(await lab.links()) == 24  # the harness logs in with the settings
        pca = await lab.client.post("/api/v1/auth/login", data=CREDENTIALS)
        assert pca.status_code == 401
        good = await lab.client.post(
            "/api/v1/auth/login", data={"username": "pm", "password": "cxm-lab"}
        )
        assert good.status_code == 200


async def test_pca_login_header_and_expiry(make_lab: Any, settings: Settings) -> None:
    async with make_lab(settings, LabSettings(pca_token_ttl_s=60)) as lab:
        response = await lab.client.post("/api/v1/auth/login", data=CREDENTIALS)
        assert response.status_code == 200 and response.json() == {}
        token = response.headers["authorization"]
        assert token.startswith("Bearer ")
        policies = await lab.client.get(
            "/api/v2/policies/alerting", headers={"Authorization": token}
        )
        assert policies.status_code == 200
        anonymous = await lab.client.get("/api/v2/policies/alerting")
        assert anonymous.status_code == 401 and anonymous.json()["errors"][0]["status"] == "401"
        sessions = lab.lab.sessions
        now = sessions.clock()
        sessions.clock = lambda: now + 61
        expired = await lab.client.get(
            "/api/v2/policies/alerting", headers={"Authorization": token}
        )
        assert expired.status_code == 401


async def test_login_faults(lab: LabHarness) -> None:
    fault = {"operation": "login", "count": 2, "status": 503}
    assert (await lab.client.post("/lab/faults", json=fault)).status_code == 201
    assert (await lab.client.post(SSO, data=CREDENTIALS)).status_code == 503
    assert (await lab.client.post("/api/v1/auth/login", data=CREDENTIALS)).status_code == 503
    assert (await lab.client.post(SSO, data=CREDENTIALS)).status_code == 201


async def test_control_api_and_health_need_no_login(lab: LabHarness) -> None:
    assert (await lab.client.get("/lab/topology")).status_code == 200
    assert (await lab.client.get("/health")).status_code == 200
    assert (await lab.client.get("/lab/oss/service-inventory")).status_code == 200
