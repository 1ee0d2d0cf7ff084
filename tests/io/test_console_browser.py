"""The console in Debian's chromium: live tickets, a ticket's story, approving resumes the flow,
signing in with a token, and an admin managing users and tokens.

IO runs under uvicorn on a free loopback port, beside a fake orchestrator that resumes the
incident when approved (it reports monitoring, then closes the ticket over the mesh) and a
fake CNC/lab/audit. The screenshots land in $CXM_SCREENSHOT_DIR (`make screenshots` points it
at docs/screenshots/ for docs/console.md), else in a temporary directory, so a plain test run
leaves the work tree as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from services.io.app import create_app
from services.io.settings import IoSettings
from shared.settings import Settings
from tests.io.browser import SHOTS
from tests.io.fakes import (
    INCIDENT,
    MESH_TOKEN,
    TUNNEL_PATH,
    approval,
    closed,
    envelope,
    network_app,
    new_ticket,
    resuming_orchestrator,
    seed_phases,
    serve,
    status,
)
from tests.io.seed import seed_audit, seed_flow
from tests.support import free_port

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


class Mesh:
    """IO and its fake peers, all served in this event loop."""

    def __init__(
        self, io_url: str, received: list[dict[str, Any]], audit: dict[str, list[Any]]
    ) -> None:
        self.io_url = io_url
        self.received = received
        self.audit = audit  # what the fake audit agent answers, by incident
        self.http = httpx.AsyncClient(
            base_url=io_url, headers={"Authorization": f"Bearer {MESH_TOKEN}"}, timeout=10
        )

    async def task(self, envelope: dict[str, Any]) -> None:
        response = await self.http.post("/a2a/tasks", json=envelope)
        assert response.status_code == 200, response.text


@pytest.fixture
async def mesh(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    loopback_trust = getattr(request, "param", True)
    io_port = free_port()
    io_url = f"http://127.0.0.1:{io_port}"
    received: list[dict[str, Any]] = []
    audit: dict[str, list[Any]] = {}
    async with (
        serve(network_app(audit_log=audit)) as network_url,
        serve(resuming_orchestrator(io_url, received)) as orchestrator_url,
    ):
        settings = Settings(
            data_dir=tmp_path,
            mesh_token=MESH_TOKEN,
            mesh_retries=0,
            port=io_port,
            orchestrator_url=orchestrator_url,
            tunnel_url=orchestrator_url,  # the same recording fake: delete_tunnel lands there
            cnc_url=network_url,
            lab_url=network_url,
            audit_url=network_url,
        )
        app = create_app(settings, io_settings=IoSettings(loopback_trust=loopback_trust))
        async with serve(app, io_port):
            m = Mesh(io_url, received, audit)
            try:
                yield m
            finally:
                await m.http.aclose()


async def open_console(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    return page


async def test_live_ticket_topology_approval_and_close(browser: Browser, mesh: Mesh) -> None:
    # history the operator already had: one closed incident, one being monitored
    await mesh.task(
        new_ticket(
            "INC-2026-0000",
            severity="medium",
            summary="Delay above SLA on pe4-p2",
            degraded_links=["pe4-p2"],
        )
    )
    await mesh.task(
        status(
            "INC-2026-0000",
            "assessing",
            "2",
            "3 services affected",
            total_affected=3,
            services_by_tier={"gold": 1, "silver": 2},
        )
    )
    await mesh.task(closed("INC-2026-0000"))
    await mesh.task(
        new_ticket(
            "INC-2026-0002",
            severity="critical",
            summary="Packet loss 4 % on p1-pe4",
            degraded_links=["p1-pe4"],
            triage=None,
        )
    )
    await mesh.task(
        status("INC-2026-0002", "monitoring", "6", "On the protection tunnel; hold timer 30 s")
    )
    page = await open_console(browser, f"{mesh.io_url}/")
    await expect(page.locator("#live")).to_have_class("live on")
    await expect(page.locator("#whoami")).to_contain_text("local-operator")
    await expect(page.locator("#tickets-card")).to_be_visible()

    # a ticket appears while the page is open, with no reload
    await mesh.task(new_ticket())
    row = page.locator(f'tr[data-incident="{INCIDENT}"]')
    await expect(row).to_be_visible()
    await expect(row.locator(".status")).to_contain_text("new")
    for phase in seed_phases():
        await mesh.task(phase)
    await mesh.task(approval())
    await mesh.task(approval("INC-2026-0002", "APR-0007", action="delete_tunnel"))
    await expect(row.locator(".status")).to_contain_text("waiting approval")
    await expect(row).to_contain_text("15")
    await expect(page.locator("#approval-count")).to_have_text("2")
    await expect(page.locator('.figure[data-figure="open"] .v')).to_have_text("2")
    await page.select_option('select[name="status"]', "all")
    await expect(page.locator("tr.ticket")).to_have_count(3)
    await page.fill('input[type="search"]', "pe4-p2")
    await expect(page.locator("tr.ticket")).to_have_count(1)
    await page.fill('input[type="search"]', "")
    await page.screenshot(path=str(SHOTS / "console.png"))

    # the ticket's page: topology with the degraded links and the protection path, timeline
    await row.click()
    await expect(page.locator("#topology svg")).to_be_visible()
    await expect(page.locator("#topology line.link.degraded")).to_have_count(2)
    await expect(page.locator("#topology line.link.protection")).to_have_count(4)
    await expect(page.locator('#topology line[data-link="pe1-pe2"]')).to_have_class("link degraded")
    await expect(page.locator("#timeline li")).to_have_count(5)
    await expect(page.locator(".why")).to_contain_text("Path chosen")
    await expect(page.locator(".why")).to_contain_text("genuine")
    await expect(page.locator("#tiers")).to_contain_text("platinum")
    await expect(page.locator("#audit")).to_contain_text("incident_created")

    # approvals: approve in the browser; the orchestrator resumes and closes the incident
    await page.click('a[data-nav="approvals"]')
    card = page.locator('.approval[data-approval="APR-0001"]')
    await expect(card).to_contain_text("steer_traffic")
    await expect(page.locator(".approval")).to_have_count(2)
    await card.locator('input[name="notes"]').fill("Protection path checked, go ahead")
    # a new approval arrives while the operator types: the list re-renders, the note stays
    await mesh.task(approval("INC-2026-0002", "APR-0008", action="cutover"))
    await expect(page.locator(".approval")).to_have_count(3)
    await expect(card.locator('input[name="notes"]')).to_have_value(
        "Protection path checked, go ahead"
    )
    await page.screenshot(path=str(SHOTS / "approvals.png"), full_page=True)
    await card.locator("button.approve").click()
    await expect(page.locator("#toast")).to_contain_text("Approved")
    await expect(page.locator(".approval")).to_have_count(2)
    await page.click("text=All")
    decided = page.locator('.approval[data-approval="APR-0001"] .decided-by')
    await expect(decided).to_have_text("local-operator")
    sent = [m for m in mesh.received if m["task_type"] == "approval_decision"]
    assert sent[0]["payload"]["decided_by"] == "local-operator"
    assert sent[0]["payload"]["notes"] == "Protection path checked, go ahead"

    await page.goto(f"{mesh.io_url}/#/ticket/{INCIDENT}")
    await expect(page.locator(".ticket-status")).to_have_attribute("data-status", "closed")
    await expect(page.locator('#timeline li[data-task="ticket_closed"]')).to_have_count(1)
    await expect(page.locator("#topology line.link.protection")).to_have_count(4)
    await expect(page.locator('.figure[data-figure="open"] .v')).to_have_text("1")
    await page.screenshot(path=str(SHOTS / "ticket.png"), full_page=True)
    await page.click("text=← Tickets")
    await page.select_option('select[name="status"]', "open")
    await expect(page.locator(f'tr[data-incident="{INCIDENT}"]')).to_have_count(0)

    # the lab panel drives the lab through IO
    await page.click('a[data-nav="lab"]')
    await expect(page.locator('select[aria-label="link"] option')).to_have_count(7)
    await page.click("text=Degrade")
    await expect(page.locator("#lab-log")).to_contain_text("degrade pe1-pe2")
    await expect(page.locator("#lab-log")).to_contain_text("applied")

    # a tunnel re-routed in place: the map follows its newest path, not the first one
    other, tunnel = "INC-2026-0002", "sr-policy-pe1-pe3-protect-002"
    moved = ["pe1", "pe2", "p1", "pe4", "p2", "pe3"]
    for update in (
        status(other, "provisioning", "4", "Tunnel up", tunnel_id=tunnel, path=TUNNEL_PATH),
        status(other, "monitoring", "6", "Re-routed", tunnel_id=tunnel, path=moved, reroute=1),
        status(other, "restoring", "7", "Cutover 75/25", tunnel_id=tunnel, step=1),
    ):
        await mesh.task(update)
    await page.goto(f"{mesh.io_url}/#/ticket/{other}")
    await expect(page.locator("#topology line.link.protection")).to_have_count(5)
    await expect(page.locator('#topology line[data-link="pe2-p1"]')).to_have_class(
        "link protection"
    )
    await expect(page.locator(".why")).to_contain_text("Re-routes")

    # escalated with the tunnel still carrying traffic: an operator removes it from the page
    await mesh.task(
        envelope(
            "ticket_closed",
            {
                "incident_id": other,
                "resolution": "escalated",
                "duration_seconds": 90,
                "summary": "Incident escalated to an operator: SLA not recovered",
                "details": {"tunnel_id": tunnel, "tunnel": "left up: it carries the services"},
                "source_agent": "orchestrator",
            },
        )
    )
    box = page.locator("#tunnel-left-up")
    await expect(box).to_contain_text(tunnel)
    await box.locator('input[name="remove-notes"]').fill("customer moved to the new PE")
    await box.locator("#remove-tunnel").click()
    await expect(box.locator("#remove-tunnel")).to_contain_text("Confirm")
    await box.locator("#remove-tunnel").click()
    await expect(page.locator("#toast")).to_contain_text("removed")
    await expect(page.locator('#timeline li[data-task="tunnel_removed"]')).to_contain_text(
        "local-operator"
    )
    await expect(page.locator("#tunnel-left-up")).to_have_count(0)
    [removed] = [m for m in mesh.received if m["task_type"] == "delete_tunnel"]
    assert removed["payload"] == {"incident_id": other, "tunnel_id": tunnel}


async def test_a_ticket_with_the_whole_seed_flow_stays_readable(
    browser: Browser, mesh: Mesh
) -> None:
    """The seed incident's page, ~30 tasks and ~30 audit events, fits a few screens.

    The audit trail's details once wrapped their JSON one character per line (the page was
    ~11,000 px tall); collapsed, and as wide as the card when opened, they no longer do.
    """
    mesh.audit[INCIDENT] = seed_audit()
    flow = [new_ticket(), *seed_flow()]
    for task in flow:
        await mesh.task(task)
    page = await open_console(browser, f"{mesh.io_url}/#/ticket/{INCIDENT}")
    await expect(page.locator("#timeline li")).to_have_count(len(flow))
    await expect(page.locator("#topology svg")).to_be_visible()
    await expect(page.locator("#audit table")).to_be_visible()
    await expect(page.locator("#audit")).to_contain_text("traffic_steered")
    height = await page.evaluate("document.body.scrollHeight")
    assert height < 4000, f"the ticket page is {height} px tall"

    # the details are one click away, laid out across the card
    entry = page.locator("#audit details").nth(3)
    await entry.locator("summary").click()
    await expect(entry).to_contain_text("max_delay_ms")
    box = await entry.bounding_box()
    card = await page.locator("#audit").bounding_box()
    assert box is not None and card is not None
    assert box["width"] > 0.8 * card["width"], (box, card)


async def test_a_ticket_with_two_policies_shows_both_and_the_unprotected(
    browser: Browser, mesh: Mesh
) -> None:
    """Every policy is listed and drawn, the unprotected services stand out, and the box for
    the tunnels left up names both and removes both."""
    first, second = "sr-policy-pe1-pe3-protect-001", "sr-policy-pe2-pe4-protect-002"
    second_path = ["pe2", "p1", "pe4"]

    def wire(tunnel_id: str, path: list[str], services: list[str]) -> dict[str, Any]:
        return {
            "tunnel_id": tunnel_id,
            "binding_sid": 24001 if tunnel_id == first else 24002,
            "te_type": "sr-mpls",
            "path": path,
            "head_end": path[0],
            "end_point": path[-1],
            "color": 100,
            "service_ids": services,
        }

    one, two = wire(first, TUNNEL_PATH, ["svc-1", "svc-2"]), wire(second, second_path, ["svc-3"])
    top = {k: v for k, v in one.items() if k != "service_ids"}
    await mesh.task(new_ticket())
    for task in (
        *seed_phases()[:2],
        status(INCIDENT, "provisioning", "4", "2 policies created", **top, tunnels=[one, two]),
        status(
            INCIDENT,
            "steering",
            "5",
            "Traffic steered onto 2 policies; 2 services unprotected",
            traffic_steered=True,
            tunnel_id=first,
            service_ids=["svc-1", "svc-2"],
            tunnel_ids=[first, second],
            tunnels=[
                {"tunnel_id": first, "service_ids": ["svc-1", "svc-2"]},
                {"tunnel_id": second, "service_ids": ["svc-3"]},
            ],
            unprotected_services=["svc-8", "svc-9"],
        ),
    ):
        await mesh.task(task)
    page = await open_console(browser, f"{mesh.io_url}/#/ticket/{INCIDENT}")
    unprotected = page.locator("#unprotected-services")
    await expect(unprotected).to_contain_text("2 services left unprotected")
    await expect(unprotected).to_contain_text("svc-8, svc-9")
    rows = page.locator("#policies tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(first)
    await expect(rows.nth(0)).to_contain_text("pe1 → pe3")
    await expect(rows.nth(0)).to_contain_text("2 services")
    await expect(rows.nth(0)).to_contain_text("carrying")
    await expect(rows.nth(1)).to_contain_text(second)
    await expect(rows.nth(1)).to_contain_text("pe2 → pe4")
    await expect(rows.nth(1)).to_contain_text("pe2 → p1 → pe4")
    await expect(rows.nth(1)).to_contain_text("sr-mpls")
    # the first policy on the links themselves, as always; the second beside them, its own style
    await expect(page.locator("#topology line.link.protection")).to_have_count(4)
    await expect(page.locator(f'#topology line.policy[data-tunnel="{second}"]')).to_have_count(2)
    await expect(page.locator(".legend")).to_contain_text(second)
    await page.screenshot(path=str(SHOTS / "ticket-policies.png"), full_page=True)

    # the re-route of the second policy moves its line; an escalation leaves both up
    await mesh.task(
        status(
            INCIDENT,
            "monitoring",
            "6",
            "Re-routed",
            tunnel_id=second,
            path=["pe2", "pe1", "p1", "pe4"],
            reroute=1,
        )
    )
    await expect(page.locator(f'#topology line.policy[data-tunnel="{second}"]')).to_have_count(3)
    await mesh.task(
        envelope(
            "ticket_closed",
            {
                "incident_id": INCIDENT,
                "resolution": "escalated",
                "duration_seconds": 90,
                "summary": "Incident escalated to an operator: SLA not recovered",
                "details": {"tunnel_id": first, "tunnel_ids": [first, second]},
                "source_agent": "orchestrator",
            },
        )
    )
    box = page.locator("#tunnel-left-up")
    await expect(box).to_contain_text(f"Tunnels {first} and {second} were left up")
    await expect(rows.nth(1)).to_contain_text("left up")
    await box.locator("#remove-tunnel").click()
    await expect(box.locator("#remove-tunnel")).to_contain_text(f"delete {first} and {second}")
    await box.locator("#remove-tunnel").click()
    await expect(page.locator("#toast")).to_contain_text(f"Tunnels {first} and {second} removed")
    await expect(page.locator("#tunnel-left-up")).to_have_count(0)
    await expect(page.locator('#timeline li[data-task="tunnel_removed"]')).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("removed")
    deleted = [
        m["payload"]["tunnel_id"] for m in mesh.received if m["task_type"] == "delete_tunnel"
    ]
    assert deleted == [first, second]


@pytest.mark.parametrize("mesh", [False], indirect=True)
async def test_sign_in_with_a_token(browser: Browser, mesh: Mesh, tmp_path: Path) -> None:
    page = await open_console(browser, f"{mesh.io_url}/")
    await expect(page.locator("#signin")).to_be_visible()
    await page.fill("#token", "cxm_not-a-real-token")
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#signin-error")).to_contain_text("not accepted")
    token = (tmp_path / "io-admin-token").read_text().strip()
    await page.fill("#token", token)
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#whoami")).to_have_text("admin · admin")
    await expect(page.locator("#live")).to_have_class("live on")
    await mesh.task(new_ticket())
    await expect(page.locator(f'tr[data-incident="{INCIDENT}"]')).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('cxm-io-token')") == token
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible()


@pytest.mark.parametrize("mesh", [False], indirect=True)
async def test_admin_issues_and_revokes_a_token(
    browser: Browser, mesh: Mesh, tmp_path: Path
) -> None:
    page = await open_console(browser, f"{mesh.io_url}/")
    await expect(page.locator("#signin")).to_contain_text("var/io-admin-token")
    await page.fill("#token", (tmp_path / "io-admin-token").read_text().strip())
    await page.click("#signin button[type=submit]")
    await page.click('a[data-nav="users"]')
    await expect(page.locator('tr[data-user="admin"]')).to_contain_text("(you)")

    # the API's validation error is shown next to the form, as text
    form = page.locator("#new-user")
    await form.locator('input[name="username"]').fill("<b>al</b>")
    await form.locator('button[type="submit"]').click()
    await expect(page.locator("#new-user-error")).to_contain_text("username '<b>al</b>' is not")
    await form.locator('input[name="username"]').fill("alice")
    await form.locator('select[name="role"]').select_option("operator")
    await form.locator('button[type="submit"]').click()
    alice = page.locator('tr[data-user="alice"]')
    await expect(alice.locator('select[name="role"]')).to_have_value("operator")
    await expect(page.locator("#new-user-error")).to_be_hidden()

    await alice.locator('input[name="label"]').fill("laptop")
    await alice.locator("button.issue").click()
    secret = page.locator(".secret")
    await expect(secret).to_contain_text("(laptop)")
    await expect(secret).to_contain_text("This token will not be shown again.")
    token = await page.locator("#issued-token").input_value()
    laptop = alice.locator("tr[data-token]", has_text="laptop")
    await expect(laptop).to_contain_text("active")
    await page.screenshot(path=str(SHOTS / "users.png"), full_page=True)

    async with httpx.AsyncClient(
        base_url=mesh.io_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as http:
        me = (await http.get("/api/v1/auth/me")).json()
        assert me == {"username": "alice", "role": "operator", "via": "token"}
        assert (await http.post("/api/v1/lab/links/pe1-pe2/recover")).status_code == 200
        assert (await http.get("/api/v1/users")).status_code == 403

        await laptop.locator("button", has_text="Revoke").click()
        await laptop.locator("button.confirm-yes").click()
        await expect(laptop.locator(".token-state")).to_contain_text("revoked")
        await expect(laptop.locator(".token-state")).to_contain_text("by admin")
        await expect(secret).to_have_count(0)
        assert token not in await page.content()
        assert (await http.get("/api/v1/auth/me")).status_code == 401
