"""The runbook side of the orchestrator's lifespan: vault, inventory, connector pool, catalog
(synced from the library folder), the matcher (its model loaded in a thread) and the
sessions' runner, opened in order and closed in reverse with the app.

Every credential use the pool reports becomes an ``audit_event`` (``credential_used``: the
credential, the connection, what ran, and the session, step and people behind it) queued in
the outbox before the secret is touched, so a use is never unrecorded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from langgraph.checkpoint.base import BaseCheckpointSaver
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks import catalog, host_tickets, sessions
from services.orchestrator.runbooks.catalog import LibrarySettings
from services.orchestrator.runbooks.connectors import ConnectorPool, CredentialUse
from services.orchestrator.runbooks.flow import build_session_graph, initial_state
from services.orchestrator.runbooks.inventory import Inventory
from services.orchestrator.runbooks.matching import MatchSettings
from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.runbooks.tickets import RunbookMatching
from services.orchestrator.runbooks.vault import Vault
from services.orchestrator.runner import Runner
from services.orchestrator.settings import OrchestratorSettings
from shared.contracts import AUDIT_EVENT
from shared.logs import get_logger
from shared.models import AuditEvent
from shared.outbox import Outbox
from shared.settings import Settings

log = get_logger(__name__)


@dataclass
class RunbookServices:
    """What the runbook handlers use; ``app.state.runbooks``."""

    engine: AsyncEngine
    orch: OrchestratorSettings
    vault: Vault
    inventory: Inventory
    pool: ConnectorPool
    runner: Runner
    matching: RunbookMatching


def credential_audit(outbox: Outbox) -> Any:
    """The pool's ``on_credential_use`` hook: one audit event per use, queued durably."""

    async def record(use: CredentialUse) -> None:
        context = dict(use.context)
        incident_id = context.get("incident_id")
        event = AuditEvent(
            event_type="credential_used",
            incident_id=incident_id,
            source_agent="orchestrator",
            details={
                "credential": use.credential,
                "connection": use.connection,
                "environment": use.environment,
                "connector": use.connector,
                "purpose": use.purpose,
                "action": use.action,
                "at": use.at.isoformat(),
                **context,
            },
        )
        # Every use is its own event (a retried step uses the credential again).
        await outbox.put(
            AUDIT_EVENT, event, key=f"credential-use:{uuid.uuid4().hex}", incident_id=incident_id
        )

    return record


@asynccontextmanager
async def runbook_resources(
    app: FastAPI,
    *,
    saver: BaseCheckpointSaver[Any],
    pg_pool: AsyncConnectionPool[Any] | None,
    orch: OrchestratorSettings,
    deps_base: dict[str, Any],
    runbook_settings: RunbookSettings | None = None,
    library: LibrarySettings | None = None,
    match_settings: MatchSettings | None = None,
) -> AsyncIterator[RunbookServices]:
    """Open everything runbooks need; ``deps_base`` holds the incident ``Deps`` fields."""
    settings: Settings = app.state.settings
    engine: AsyncEngine = app.state.engine
    rb_settings = runbook_settings or RunbookSettings()
    async with AsyncExitStack() as stack:
        await catalog.init(engine)
        await sessions.init(engine)
        await host_tickets.init(engine)
        shipped = await catalog.load_library(catalog.library_dir(library))
        await catalog.sync_library(engine, shipped)
        log.info("runbook library synced", runbooks=len(shipped))
        matching = await RunbookMatching.open(engine, match_settings or MatchSettings())
        vault = await Vault.open(engine, rb_settings, data_dir=settings.data_dir)
        inventory = await Inventory.open(engine)
        pool = await stack.enter_async_context(
            ConnectorPool(
                vault,
                inventory.get,
                rb_settings,
                on_credential_use=credential_audit(app.state.outbox),
            )
        )
        deps = sessions.SessionDeps(
            **deps_base, pool=pool, inventory=inventory, runbook_settings=rb_settings
        )
        runner = Runner(
            graph=build_session_graph(saver),
            engine=engine,
            deps=deps,
            pg_pool=pg_pool,
            runs=sessions.SESSIONS,
            initial=initial_state,
            view=sessions.view_of,
        )
        await runner.start()
        stack.push_async_callback(runner.stop)
        yield RunbookServices(
            engine=engine,
            orch=orch,
            vault=vault,
            inventory=inventory,
            pool=pool,
            runner=runner,
            matching=matching,
        )
