"""Fixtures: the lab in-process, spoken to over HTTP exactly as a CNC/PCA client would, and an
alert receiver. The lab's tests do not use CXM's southbound client: they pin the wire shapes
docs/southbound.md documents, so they hold whatever client talks to the lab."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.lab.app import create_app
from services.lab.controller import Lab
from services.lab.settings import LabSettings
from shared.settings import Settings
from tests.support import running

TOPOLOGY = "/crosswork/nbi/topology/v3/restconf/data"
NETWORKS = f"{TOPOLOGY}/ietf-network-state:networks"
PM = f"{TOPOLOGY}/cisco-crosswork-performance-metrics:igp-links-performance-metrics"
SR_LIST = f"{TOPOLOGY}/cisco-crosswork-segment-routing-policy:sr-policies"
RSVP_LIST = f"{TOPOLOGY}/cisco-crosswork-rsvp-te-tunnel:rsvp-te-tunnels"
OPS = "/crosswork/nbi/optimization/v3/restconf/operations"
SR_OPS = f"{OPS}/cisco-crosswork-optimization-engine-sr-policy-operations"
SR_OUT = "cisco-crosswork-optimization-engine-sr-policy-operations:output"
RSVP_OPS = f"{OPS}/cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations"
RSVP_OUT = "cisco-crosswork-optimization-engine-rsvp-te-tunnel-operations:output"
CAT = "/crosswork/nbi/cat-inventory/v1/restconf/data"
NSO = "/crosswork/proxy/nso/restconf/data"
SRV6 = f"{NSO}/cisco-sr-te-cfp:sr-te/cisco-sr-te-cfp-sr-policies:policies/policy="
SSO = "/crosswork/sso/v1/tickets"
SERVICE = "https://lab:30603/app-dashboard"


@dataclass
class Receiver:
    """A stand-in correlator: records every PCA webhook it receives."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/v1/tickets/webhook/pca")
        async def webhook(request: Request) -> Any:
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"detail": "busy"}, status_code=503)
            self.alerts.append(await request.json())
            self.headers.append(dict(request.headers))
            return {"accepted": 1}

        return app

    def states(self) -> list[tuple[str, str]]:
        return [(a["objectName"], a["alertState"]) for a in self.alerts]


@dataclass
class LabHarness:
    """The lab app, an HTTP client on it, and logins made the documented way."""

    app: FastAPI
    client: httpx.AsyncClient
    receiver: Receiver
    settings: Settings
    _jwt: str | None = None
    _pca: str | None = None

    @property
    def lab(self) -> Lab:
        lab: Lab = self.app.state.lab
        return lab

    async def login(self) -> str:
        """CNC: username/password → TGT → JWT."""
        tgt = await self.client.post(
            SSO,
            data={
                "username": self.settings.cnc_username,
                "password": self.settings.cnc_password.get_secret_value(),
            },
        )
        assert tgt.status_code == 201, tgt.text
        jwt = await self.client.post(f"{SSO}/{tgt.text}", data={"service": SERVICE})
        assert jwt.status_code == 200, jwt.text
        return jwt.text

    async def cnc(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self._jwt is None:
            self._jwt = await self.login()
        headers = {"Authorization": f"Bearer {self._jwt}", **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)

    async def pca(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if self._pca is None:
            response = await self.client.post(
                "/api/v1/auth/login",
                data={
                    "username": self.settings.pca_username,
                    "password": self.settings.pca_password.get_secret_value(),
                },
            )
            assert response.status_code == 200, response.text
            self._pca = response.headers["authorization"]
        headers = {"Authorization": self._pca, **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)

    async def get(self, path: str, **kw: Any) -> Any:
        """A CNC read that must succeed: its JSON."""
        response = await self.cnc("GET", path, **kw)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    async def op(self, path: str, body: Any) -> httpx.Response:
        return await self.cnc(
            "POST", path, json=body, headers={"Content-Type": "application/yang-data+json"}
        )

    async def sr(self, operation: str, *policies: dict[str, Any]) -> list[dict[str, Any]]:
        """An SR policy operation that answers 200: its results."""
        response = await self.op(
            f"{SR_OPS}:sr-policy-{operation}", {"input": {"sr-policies": list(policies)}}
        )
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()[SR_OUT]["results"]
        return results

    async def links(self) -> list[dict[str, Any]]:
        data = await self.get(NETWORKS)
        links: list[dict[str, Any]] = data["ietf-network-state:networks"]["network"][0][
            "ietf-network-topology-state:link"
        ]
        return links

    async def pm(self, cnc_link_id: str) -> httpx.Response:
        return await self.cnc("GET", f"{PM}/igp-link-pm={urllib.parse.quote(cnc_link_id, safe='')}")

    async def rate_mbps(self, link: str) -> float:
        """The lab link ``a-b``'s load: its a → b direction's utilisation, in Mbps."""
        a, _b = link.split("-")
        lab_link = self.lab.network.link(link)
        forward, backward = self.lab.network.topology.cnc_link_ids(lab_link.link_id)
        response = await self.pm(forward if lab_link.source == a else backward)
        assert response.status_code == 200, response.text
        entry = response.json()["cisco-crosswork-performance-metrics:igp-link-pm"][0]
        return int(entry["bandwidth-utilization-kbps"]) / 1000

    async def policies(self) -> list[dict[str, Any]]:
        data = await self.get(SR_LIST)
        policies: list[dict[str, Any]] = data["cisco-crosswork-segment-routing-policy:sr-policies"][
            "policy"
        ]
        return policies

    async def services(self, kind: str = "l3vpn") -> list[dict[str, Any]]:
        model = f"ietf-{kind}-ntw"
        path = f"{CAT}/{model}:{kind}-ntw/vpn-services/vpn-service"
        data = await self.get(path, params={"content": "nonconfig"})
        services: list[dict[str, Any]] = data[f"{model}:vpn-service"]
        return services


@asynccontextmanager
async def harness(settings: Settings, lab_settings: LabSettings) -> AsyncIterator[LabHarness]:
    """The lab app with its lifespan, logged in lazily, and an alert receiver."""
    receiver = Receiver()
    app = create_app(
        settings, lab_settings, alert_transport=httpx.ASGITransport(app=receiver.app())
    )
    async with running(app) as client:
        yield LabHarness(app, client, receiver, settings)


@pytest.fixture
def lab_settings() -> LabSettings:
    """The seed's topology; alert retries fast so failure tests stay quick."""
    return LabSettings(topology="default", push_backoff_s=0.01, push_retries=2)


@pytest.fixture
async def lab(settings: Settings, lab_settings: LabSettings) -> AsyncIterator[LabHarness]:
    """The default lab with alerts pushed to an in-process receiver."""
    async with harness(settings, lab_settings) as h:
        yield h


@pytest.fixture
def make_lab() -> Any:
    """``async with make_lab(settings, lab_settings) as h`` for custom labs."""
    return harness
