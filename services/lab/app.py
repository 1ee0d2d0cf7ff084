"""Network lab (8010): CNC 7.x and PCA northbound, exactly as documented, over an in-memory network.

``create_app(settings)`` builds the app; the topology is built when the app is (so a bad
``CXM_LAB_TOPOLOGY`` fails at start-up with its name), and the lifespan owns the HTTP client
that pushes PCA alerts and every background task. All state hangs off ``app.state.lab``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.lab.alerts import AlertPusher
from services.lab.auth import Sessions
from services.lab.cnc import cnc, sso
from services.lab.common import LabError
from services.lab.controller import Lab
from services.lab.network import LabNetwork, Thresholds
from services.lab.pca import login, pca
from services.lab.routes import control
from services.lab.settings import LabSettings
from services.lab.topology import build_topology, delay_threshold_ms
from shared import __version__
from shared.agent import Access, RouteAuth
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger(__name__)

PCA_WEBHOOK = "/api/v1/tickets/webhook/pca"

CNC_LOGIN = RouteAuth(
    Access.CONTROLLER,
    "CNC's own login, as a real CNC: a TGT for CXM_CNC_USERNAME/PASSWORD, a JWT for the TGT",
)
CNC_JWT = RouteAuth(Access.CONTROLLER, "CNC's own auth, as a real CNC: the JWT from its login")
PCA_LOGIN = RouteAuth(
    Access.CONTROLLER, "PCA's own login, as a real PCA: a token for CXM_PCA_USERNAME/PASSWORD"
)
PCA_TOKEN = RouteAuth(Access.CONTROLLER, "PCA's own auth, as a real PCA: the token from its login")
LAB_CONTROL = RouteAuth(
    Access.OPEN,
    "the lab is a test fixture that emulates a network: driving it is what tests and demos "
    "do, and it holds no real network's data; a real deployment does not run it",
)
# The lab takes no mesh token (a real CNC or PCA would not); every route still says what it
# asks, and tests/foundation/test_route_auth.py holds it to that.


def create_app(
    settings: Settings,
    lab_settings: LabSettings | None = None,
    *,
    alert_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The lab app; ``lab_settings`` defaults to the ``CXM_LAB_*`` environment.

    ``alert_transport`` is the test seam for alert pushing (an ASGI receiver, a MockTransport).
    """
    lab_settings = lab_settings or LabSettings()
    topology = build_topology(lab_settings.topology, seed=lab_settings.seed)
    thresholds = Thresholds(
        delay_ms=delay_threshold_ms(topology, lab_settings.threshold_delay_ms),
        jitter_ms=lab_settings.threshold_jitter_ms,
        loss_pct=lab_settings.threshold_loss_pct,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            timeout=settings.mesh_timeout_s, transport=alert_transport
        ) as client:
            pusher = AlertPusher(
                client,
                url=f"{settings.url_of('correlator')}{PCA_WEBHOOK}",
                token=settings.mesh_token,
                enabled=lab_settings.push_alerts,
                retries=lab_settings.push_retries,
                backoff_s=lab_settings.push_backoff_s,
            )
            lab = Lab(
                settings=settings,
                lab_settings=lab_settings,
                network=LabNetwork(topology, thresholds),
                pusher=pusher,
                sessions=Sessions(
                    cnc_credentials=(
                        settings.cnc_username,
                        settings.cnc_password.get_secret_value(),
                    ),
                    pca_credentials=(
                        settings.pca_username,
                        settings.pca_password.get_secret_value(),
                    ),
                    max_sessions=lab_settings.max_sessions,
                    jwt_ttl_s=lab_settings.jwt_ttl_s,
                    tgt_ttl_s=lab_settings.tgt_ttl_s,
                    pca_token_ttl_s=lab_settings.pca_token_ttl_s,
                ),
            )
            app.state.lab = lab
            pusher.start()
            log.info(
                "lab ready",
                topology=topology.name,
                nodes=len(topology.nodes),
                links=len(topology.links),
                services=len(topology.services),
                push_alerts=pusher.enabled,
            )
            try:
                yield
            finally:
                await lab.aclose()
                await pusher.stop()

    app = FastAPI(
        title="CXM network lab",
        description="Emulates the Crosswork (CNC) and PCA northbound APIs; see docs/southbound.md",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.lab_settings = lab_settings
    app.state.topology = topology

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError) -> Response:
        return exc.response()

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "agent": "lab", "version": __version__}

    app.include_router(sso, dependencies=[CNC_LOGIN.depends])
    app.include_router(cnc, dependencies=[CNC_JWT.depends])
    app.include_router(login, dependencies=[PCA_LOGIN.depends])
    app.include_router(pca, dependencies=[PCA_TOKEN.depends])
    app.include_router(control, dependencies=[LAB_CONTROL.depends])
    return app
