"""A proactive ticket in Debian's chromium (issue 14): the list marks it, and its page charts the
link's load (measured samples, native load, the forecast dashed, threshold/target/release lines)
from the newest ``status_update``'s ``details.load``, redrawn live as updates stream in.

IO runs under uvicorn on a free loopback port beside the fake CNC/lab/audit; the tasks are the
ones the correlator (``new_ticket`` with ``proactive``) and the orchestrator's proactive branch
(``status_update`` with ``load``, ``target_pct``, ``release_pct``) send. The screenshot lands in
$CXM_SCREENSHOT_DIR (``make screenshots``: docs/screenshots/), else a temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from services.io.app import create_app
from shared.settings import Settings
from tests.io.browser import SHOTS
from tests.io.fakes import MESH_TOKEN, network_app, new_ticket, serve, status
from tests.support import free_port

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
PROACTIVE = "INC-2026-0014"
REACTIVE = "INC-2026-0013"
LINK = "pe1-pe2"


@pytest.fixture
async def io(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """IO served for the browser; the client posts mesh tasks to it."""
    port = free_port()
    async with serve(network_app()) as network_url:
        settings = Settings(
            data_dir=tmp_path,
            mesh_token=MESH_TOKEN,
            mesh_retries=0,
            port=port,
            orchestrator_url=network_url,
            cnc_url=network_url,
            lab_url=network_url,
            audit_url=network_url,
        )
        async with (
            serve(create_app(settings), port) as url,
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {MESH_TOKEN}"}, timeout=10
            ) as http,
        ):
            yield http


async def send(io: httpx.AsyncClient, task: dict[str, Any]) -> None:
    response = await io.post("/a2a/tasks", json=task)
    assert response.status_code == 200, response.text


def load(
    now: float, measured: list[float], forecast: list[float], native: list[float] | None = None
) -> dict[str, Any]:
    """A LinkLoadForecast as the traffic agent answers ``link_forecast``: samples every 30 s
    up to ``now``, the forecast every 60 s after it."""
    step = 30.0
    samples = [[now - step * (len(measured) - 1 - i), v] for i, v in enumerate(measured)]
    ahead = [[now + 60.0 * (i + 1), v] for i, v in enumerate(forecast)]
    result: dict[str, Any] = {
        "link_id": LINK,
        "threshold_pct": 70.0,
        "measured_pct": measured[-1],
        "native_pct": native[-1] if native else measured[-1],
        "predicted_pct": forecast[-1],
        "samples": samples,
        "native": [[t, v] for (t, _), v in zip(samples, native, strict=True)] if native else [],
        "forecast": ahead,
        "capacity_mbps": 10000.0,
    }
    return result


def pairs(points: str | None) -> list[tuple[float, float]]:
    assert points, "no points"
    return [(float(x), float(y)) for x, y in (p.split(",") for p in points.split())]


async def open_console(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    return page


async def test_a_proactive_ticket_shows_its_badge_and_its_load_chart_live(
    browser: Browser, io: httpx.AsyncClient
) -> None:
    await send(
        io,
        new_ticket(
            REACTIVE, severity="high", summary="Packet loss on pe2-pe3", degraded_links=["pe2-pe3"]
        ),
    )
    page = await open_console(browser, f"{io.base_url}/")
    await expect(page.locator("#live")).to_have_class("live on")

    # the correlator opens it while the list is open: marked proactive, the reactive one not
    await send(
        io,
        new_ticket(
            PROACTIVE,
            severity="medium",
            summary=f"Congestion forecast on {LINK}: 95% in 300s (threshold 70%)",
            degraded_links=[LINK],
            triage=None,
            proactive=True,
        ),
    )
    row = page.locator(f'tr[data-incident="{PROACTIVE}"]')
    await expect(row.locator(".badge.proactive")).to_have_text("Proactive")
    await expect(page.locator(f'tr[data-incident="{REACTIVE}"] .badge.proactive')).to_have_count(0)
    await page.fill('input[type="search"]', "proactive")
    await expect(page.locator("tr.ticket")).to_have_count(1)
    await page.fill('input[type="search"]', "")

    # the page before any forecast: the badge, and the card saying none came yet
    await row.click()
    await expect(page.locator(".ticket-head .badge.proactive")).to_have_text("Proactive")
    await expect(page.locator("#load-card")).to_contain_text("No load forecast reported yet")

    # the orchestrator's assessment carries the link's load: the chart draws it
    now = time.time()
    measured = [55.0, 61.0, 66.0, 71.0, 76.0, 79.0, 82.0]
    forecast = [86.0, 89.0, 91.0, 93.0, 95.0]
    await send(
        io,
        status(
            PROACTIVE,
            "assessing",
            "2",
            f"Congestion forecast on {LINK}: 2 services ride it",
            proactive=True,
            load=load(now, measured, forecast),
            target_pct=60.0,
            release_pct=50.0,
        ),
    )
    chart = page.locator(f'#load-card svg.load-chart[data-link="{LINK}"]')
    summary = f"{LINK}: 82 % now, 95 % forecast, threshold 70 %"
    await expect(chart).to_have_attribute("aria-label", f"{summary}; target 60 %, release 50 %")
    await expect(chart.locator("title")).to_have_text(f"{summary}; target 60 %, release 50 %")
    await expect(chart.locator("polyline.measured")).to_have_attribute(
        "data-points", str(len(measured))
    )
    drawn = pairs(await chart.locator("polyline.measured").get_attribute("points"))
    assert len(drawn) == len(measured)
    assert [x for x, _ in drawn] == sorted(x for x, _ in drawn)  # time runs left to right
    assert drawn[-1][1] < drawn[0][1]  # the load rises: higher on the chart
    # the forecast runs on from the newest sample, dashed, and ends above the threshold
    ahead = pairs(await chart.locator("polyline.forecast").get_attribute("points"))
    assert len(ahead) == len(forecast) + 1 and ahead[0] == drawn[-1]
    threshold = chart.locator("line.threshold")
    await expect(threshold).to_have_attribute("data-pct", "70")
    y70 = float(await threshold.get_attribute("y1") or "nan")
    assert ahead[-1][1] < y70 < drawn[0][1]  # 95 % above the line, 55 % below it
    await expect(chart.locator("line.target")).to_have_attribute("data-pct", "60")
    await expect(chart.locator("line.release")).to_have_attribute("data-pct", "50")
    await expect(chart.locator("polyline.native")).to_have_count(0)
    await expect(chart.locator("text.tick.y").first).to_have_text("0 %")
    await expect(chart.locator("text.tick.x", has_text="now")).to_have_count(1)
    await expect(page.locator("#load-card figcaption")).to_contain_text("82 % now")
    # the timeline says it in one line rather than listing every sample
    await expect(page.locator("#timeline")).to_contain_text(summary)

    # traffic moved: measured load falls, native stays high; the chart follows, no reload
    later = now + 60
    await send(
        io,
        status(
            PROACTIVE,
            "monitoring",
            "6",
            f"2 services moved off {LINK}; watching its native load",
            proactive=True,
            load=load(
                later,
                [76.0, 79.0, 82.0, 84.0, 63.0, 58.0, 57.0],
                [88.0, 86.0, 80.0, 72.0, 64.0],
                native=[76.0, 79.0, 82.0, 84.0, 86.0, 88.0, 88.0],
            ),
            target_pct=60.0,
            release_pct=50.0,
        ),
    )
    await expect(chart).to_have_attribute(
        "aria-label",
        f"{LINK}: 57 % now, 64 % forecast, threshold 70 %; native 88 %, target 60 %, release 50 %",
    )
    await expect(chart.locator("polyline.native")).to_have_attribute("data-points", "7")
    native = pairs(await chart.locator("polyline.native").get_attribute("points"))
    ahead = pairs(await chart.locator("polyline.forecast").get_attribute("points"))
    assert ahead[0] == native[-1]  # the forecast is of native load
    await expect(page.locator("#load-card .legend")).to_contain_text("native")
    await page.screenshot(path=str(SHOTS / "ticket-proactive.png"), full_page=True)
