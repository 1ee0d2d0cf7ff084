"""The console's runbooks in Debian's chromium (issue #12): the library (search, read, an
invalid edit and the problem the orchestrator names), a host ticket's suggestions, running one,
the session's steps appearing live and an inline approval of a step's exact command, and the
connections and credentials page (a secret never comes back to the page).

Unlike test_console_browser.py the orchestrator here is the real one, in-process behind IO
(tests/runbooks/session_mesh.py's routing), with the shipped library and a local runbook, so
what the page shows is what the orchestrator answers. IO is served by uvicorn on a free port
for the browser. Screenshots land in $CXM_SCREENSHOT_DIR, else a temporary directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from services.io.app import create_app as create_io
from services.io.settings import IoSettings
from services.orchestrator.app import create_app as create_orchestrator
from services.orchestrator.runbooks.catalog import LibrarySettings
from services.orchestrator.settings import OrchestratorSettings
from shared.settings import Settings
from tests.io.browser import SHOTS
from tests.io.fakes import MESH_TOKEN, network_app, serve
from tests.orchestrator.fake_peers import FakeNetwork
from tests.runbooks.session_mesh import IO_PORT, ORCHESTRATOR_PORT, Routes
from tests.support import free_port, running

pytestmark = pytest.mark.browser

TIMEOUT_MS = 20_000

HOST_TICKET = "INC-2026-0301"
RUNBOOK = "tmp-cleanup-local"
SECRET = "s3cr3t-never-on-the-page"

# A runbook whose steps run on the orchestrator itself (connector local), so a session really
# runs here; its main step needs an operator's approval.
LOCAL_RUNBOOK: dict[str, Any] = {
    "id": RUNBOOK,
    "title": "Disk almost full: clear old files under /var/tmp (local)",
    "description": "For disk almost full and no space left on device tickets on a host: shows "
    "the usage, deletes old temporary files under the ticket's path, checks the usage again.",
    "keywords": ["disk almost full", "no space left on device", "disk full", "var tmp"],
    "labels": {"alertname": "NodeFilesystemAlmostOutOfSpace"},
    "severities": ["high", "medium"],
    "steps": {
        "prechecks": [
            {
                "name": "show usage",
                "connector": "local",
                "command": "echo 'usage of {{ticket.labels.path}}: 95%'",
                "timeout_s": 30,
                "idempotent": True,
            }
        ],
        "main": [
            {
                "name": "delete old files",
                "connector": "local",
                "command": "echo freed 120 KiB under {{ticket.labels.path}}",
                "timeout_s": 30,
                "requires_approval": True,
                "expect": {"contains": "freed"},
            }
        ],
        "postchecks": [
            {
                "name": "usage below threshold",
                "connector": "local",
                "command": "echo '{{ticket.host}}: 41% used, threshold 90%'",
                "timeout_s": 30,
                "idempotent": True,
            }
        ],
    },
    "rollback": [{"name": "record usage", "connector": "local", "command": "echo usage recorded"}],
}


@dataclass
class Cxm:
    """IO served for the browser, the real orchestrator behind it, and an API client."""

    io_url: str
    http: httpx.AsyncClient
    data_dir: Path

    def admin(self) -> dict[str, str]:
        token = (self.data_dir / "io-admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    async def task(self, task_type: str, payload: dict[str, Any]) -> None:
        response = await self.http.post(
            "/a2a/tasks",
            json={"task_type": task_type, "payload": payload},
            headers={"Authorization": f"Bearer {MESH_TOKEN}"},
        )
        assert response.status_code == 200, response.text


@pytest.fixture
async def cxm(tmp_path: Path) -> AsyncIterator[Cxm]:
    io_port = free_port()
    settings = Settings(data_dir=tmp_path, mesh_token=MESH_TOKEN, port=io_port, mesh_retries=0)
    routes = Routes(FakeNetwork())  # audit, notify, correlator: the orchestrator's fake peers
    network = httpx.ASGITransport(app=network_app())  # CNC, lab and audit for IO
    io_app = create_io(
        settings,
        mesh_transport=routes,
        southbound_transport=network,
        peer_transport=network,
        io_settings=IoSettings(),
    )
    orchestrator = create_orchestrator(
        settings,
        orchestrator_settings=OrchestratorSettings(),
        mesh_transport=routes,
        library=LibrarySettings(),  # the shipped library
    )
    async with serve(io_app, io_port) as io_url:
        routes.apps[IO_PORT] = io_app  # the orchestrator's mesh calls reach this IO
        async with running(orchestrator):
            routes.apps[ORCHESTRATOR_PORT] = orchestrator
            async with httpx.AsyncClient(base_url=io_url, timeout=20) as http:
                yield Cxm(io_url, http, tmp_path)
            routes.apps.pop(ORCHESTRATOR_PORT, None)


async def open_console(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    return page


async def test_library_edit_suggestions_session_and_inline_approval(
    browser: Browser, cxm: Cxm
) -> None:
    created = await cxm.http.post("/api/v1/runbooks", json=LOCAL_RUNBOOK, headers=cxm.admin())
    assert created.status_code == 201, created.text
    page = await open_console(browser, f"{cxm.io_url}/")
    await expect(page.locator("#whoami")).to_contain_text("local-operator")

    # the library: every shipped runbook and ours, searchable
    await page.click('a[data-nav="runbooks"]')
    rows = page.locator("#runbook-list tr.runbook")
    await expect(page.locator('tr[data-runbook="linux-disk-full"]')).to_be_visible()
    total = await rows.count()
    assert total >= 15, total
    await page.screenshot(path=str(SHOTS / "runbooks.png"), full_page=False)
    await page.fill("#runbook-search", "bgp")
    await expect(page.locator('tr[data-runbook="bgp-session-down"]')).to_be_visible()
    await expect(page.locator('tr[data-runbook="linux-disk-full"]')).to_have_count(0)
    assert 0 < await rows.count() < total
    await page.fill("#runbook-search", "no space left")
    await expect(page.locator(f'tr[data-runbook="{RUNBOOK}"]')).to_be_visible()
    await expect(page.locator('tr[data-runbook="bgp-session-down"]')).to_have_count(0)

    # one runbook: steps by phase, the approval it needs, its rollback
    await page.locator(f'tr[data-runbook="{RUNBOOK}"] a').click()
    await expect(page.locator("#runbook h1")).to_contain_text("Disk almost full")
    main = page.locator('section.phase[data-phase="main"]')
    await expect(main.locator('li[data-step="delete old files"]')).to_contain_text("needs approval")
    await expect(main).to_contain_text("echo freed 120 KiB under {{ticket.labels.path}}")
    await expect(page.locator('section.phase[data-phase="rollback"]')).to_contain_text(
        "record usage"
    )
    await expect(page.locator("#runbook-version option")).to_have_count(1)

    # an invalid edit (YAML): the orchestrator's problem names the step and the field
    await page.click("#runbook-edit")
    editor = page.locator("#runbook-text")
    text = await editor.input_value()
    assert text.startswith(f"id: {RUNBOOK}\n"), text[:80]
    await editor.fill(text.replace("timeout_s: 30", "timeout_s: -5", 2))
    await page.click("#runbook-save")
    problem = page.locator("#runbook-problems li.problem").first
    await expect(problem).to_contain_text('steps.prechecks[0] (name "show usage").timeout_s')
    await expect(problem).to_contain_text("must be > 0")
    # fixed, it saves as version 2 (and JSON works as well as YAML)
    await page.select_option("#runbook-format", "json")
    fixed = (await editor.input_value()).replace("-5", "45")
    await editor.fill(fixed.replace('"title": "Disk', '"title": "Disk (v2)', 1))
    await page.click("#runbook-save")
    await expect(page.locator("#toast")).to_contain_text(f"Saved {RUNBOOK} version 2")
    await expect(page.locator("#runbook-version option")).to_have_count(2)
    await expect(page.locator("#runbook h1")).to_contain_text("(v2)")
    await page.select_option("#runbook-version", "1")
    await expect(page.locator("#runbook h1")).not_to_contain_text("(v2)")
    await expect(page.locator("#runbook")).to_contain_text("An older version")

    # a host ticket: its three suggestions with confidence, factors and explanation
    await cxm.task(
        "new_ticket",
        {
            "incident_id": HOST_TICKET,
            "severity": "high",
            "summary": "Disk almost full on web-03",
            "kind": "host",
            "title": "Disk almost full on web-03",
            "description": "No space left on device: /var/tmp at 95% on web-03",
            "host": "web-03",
            "labels": {"alertname": "NodeFilesystemAlmostOutOfSpace", "path": "/var/tmp"},
            "source_agent": "event_correlator",
        },
    )
    await page.goto(f"{cxm.io_url}/#/ticket/{HOST_TICKET}")
    await expect(page.locator("#ticket-host")).to_have_text("web-03")
    suggestions = page.locator("#suggestions li.suggestion")
    await expect(suggestions).to_have_count(3)
    ours = page.locator(f'#suggestions li.suggestion[data-runbook="{RUNBOOK}"]')
    await expect(ours).to_be_visible()
    await expect(ours.locator('dd[data-factor="semantic"]')).to_contain_text("%")
    await expect(ours.locator('dd[data-factor="recency"]')).to_be_visible()
    await expect(ours.locator(".explanation")).not_to_be_empty()
    await expect(ours.locator("meter")).to_have_attribute("aria-label", f"confidence of {RUNBOOK}")
    await page.screenshot(path=str(SHOTS / "ticket-runbooks.png"), full_page=False)

    # Run: the session starts, its steps appear, the main step waits for an approval inline
    await ours.locator("button.run").click()
    session = page.locator("#session")
    await expect(session).to_be_visible()
    await expect(session.locator('tr.step[data-step="show usage"]')).to_have_attribute(
        "data-status", "completed"
    )
    await expect(session.locator('tr.step[data-step="show usage"]')).to_contain_text(
        "usage of /var/tmp: 95%"
    )
    waiting = session.locator('tr.step[data-step="delete old files"]')
    await expect(waiting).to_have_attribute("data-status", "waiting_approval")
    inline = session.locator(".inline-approval")
    await expect(inline.locator("pre.command")).to_have_text("echo freed 120 KiB under /var/tmp")
    await expect(page.locator("#approval-count")).to_have_text("1")
    await page.screenshot(path=str(SHOTS / "session.png"), full_page=True)
    await inline.locator('input[name="notes"]').fill("old tmp files only, go")
    await inline.locator("button.approve").click()
    await expect(page.locator("#toast")).to_contain_text("Approved: delete old files")
    await expect(waiting).to_have_attribute("data-status", "completed")
    await expect(waiting.locator("td.exit")).to_have_text("0")
    await expect(waiting).to_contain_text("freed 120 KiB under /var/tmp")
    await expect(session).to_have_attribute("data-status", "completed")
    await expect(session.locator(".verification")).to_be_visible()
    await expect(page.locator("#approval-count")).to_be_hidden()

    # the decision was the local operator's, recorded by the API
    approvals = (
        await cxm.http.get(
            "/api/v1/approvals",
            params={"status": "all", "incident_id": HOST_TICKET},
            headers=cxm.admin(),
        )
    ).json()
    [decided] = [a for a in approvals if a["action"] == "runbook_step"]
    assert decided["decided_by"] == "local-operator"
    assert decided["notes"] == "old tmp files only, go"


async def test_connections_and_credentials(browser: Browser, cxm: Cxm) -> None:
    page = await open_console(browser, f"{cxm.io_url}/#/connections")
    # an operator sees connections; credentials are for admins
    await expect(page.locator("#view")).to_contain_text("Only an admin sees and adds credentials")
    await page.click("#signin-open")
    await page.fill("#token", (cxm.data_dir / "io-admin-token").read_text().strip())
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#whoami")).to_have_text("admin · admin")
    await page.goto(f"{cxm.io_url}/#/connections")
    await expect(page.locator("#credentials")).to_contain_text("No credential yet.")

    # a credential: the secret is typed once, and not on the page after saving
    form = page.locator("#new-credential")
    await form.locator('input[name="name"]').fill("web-api-token")
    await form.locator('select[name="kind"]').select_option("token")
    await form.locator('input[name="secret"]').fill(SECRET)
    assert await form.locator('input[name="secret"]').get_attribute("type") == "password"
    await form.locator('button[type="submit"]').click()
    saved = page.locator('#credential-list tr[data-credential="web-api-token"]')
    await expect(saved).to_contain_text("token")
    await expect(form.locator('input[name="secret"]')).to_have_value("")
    assert SECRET not in await page.content()
    # what the API refuses is shown next to the form, naming the field
    await form.locator('input[name="name"]').fill("root-password")
    await form.locator('select[name="kind"]').select_option("password")
    await form.locator('input[name="secret"]').fill(SECRET)
    await form.locator('button[type="submit"]').click()
    await expect(page.locator("#new-credential-error")).to_contain_text("username")
    assert SECRET not in await page.content()

    # connections: a local one that answers, an http one nobody listens on
    conn = page.locator("#new-connection")
    await conn.locator('input[name="name"]').fill("orchestrator-local")
    await conn.locator('select[name="environment"]').select_option("dev")
    await conn.locator('select[name="connector"]').select_option("local")
    await conn.locator('button[type="submit"]').click()
    local = page.locator('#connection-list tr[data-connection="orchestrator-local"]')
    await expect(local).to_contain_text("local")
    await conn.locator('input[name="name"]').fill("status-page")
    await conn.locator('select[name="environment"]').select_option("staging")
    await conn.locator('select[name="connector"]').select_option("http")
    await conn.locator('input[name="url"]').fill(f"http://127.0.0.1:{free_port()}")
    await conn.locator('input[name="credential"]').fill("web-api-token")
    await conn.locator('button[type="submit"]').click()
    dead = page.locator('#connection-list tr[data-connection="status-page"]')
    await expect(dead).to_contain_text("web-api-token")

    await local.locator("button.test").click()
    await expect(local.locator(".test-result.ok")).to_contain_text("ok")
    await expect(local.locator(".test-result")).to_contain_text("ms")
    await dead.locator("button.test").click()
    failure = dead.locator(".test-result.bad")
    await expect(failure).to_be_visible()
    await expect(failure.locator(".badge")).not_to_have_text("ok")
    await expect(failure).to_contain_text("ms")
    await expect(failure.locator(".badge")).to_have_text("refused")  # the failure's kind

    # rotate the key (admin): every secret re-encrypted, none shown
    await page.locator("#rotate-key button", has_text="Rotate key").click()
    await page.locator("#rotate-key button.confirm-yes").click()
    await expect(page.locator("#toast")).to_contain_text("Key rotated: 1 secrets")
    await page.screenshot(path=str(SHOTS / "connections.png"), full_page=True)
    assert SECRET not in await page.content()
