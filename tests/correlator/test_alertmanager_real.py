"""The real Prometheus Alertmanager (Debian's binary) delivers its webhook to the correlator."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.correlator.app import create_app
from shared.settings import Settings
from tests.correlator.conftest import AUTH, TOKEN, Cnc, Peers, make_config
from tests.support import free_port, wait_for

AM = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

CONFIG = """
route:
  receiver: cxm
  group_by: [alertname, link]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: cxm
    webhook_configs:
      - url: http://127.0.0.1:{port}/api/v1/tickets/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"""


@pytest.mark.skipif(AM is None, reason="apt-get install prometheus-alertmanager")
async def test_real_alertmanager_webhook_reaches_correlator(
    tmp_path: Path, base_settings: Settings, peers: Peers, cnc: Cnc
) -> None:
    assert AM is not None
    port, am_port = free_port(), free_port()
    app = create_app(
        base_settings.model_copy(update={"port": port}),
        mesh_transport=httpx.MockTransport(peers.handler),
        config=make_config(group_wait_s=0.2, tick_s=0.1),
        cnc_transport=httpx.MockTransport(cnc.handler),
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    (tmp_path / "am.yml").write_text(CONFIG.format(port=port, token=TOKEN))
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the awaited work
        [
            AM,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for(lambda: server.started, timeout=15)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{am_port}", timeout=5) as am:

            async def ready() -> bool:
                try:
                    return (await am.get("/-/ready")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=30)
            alert = {
                "labels": {
                    "alertname": "LinkLatencyHigh",
                    "link": "pe1-pe2",
                    "severity": "critical",
                },
                "annotations": {"summary": "Latency above SLA on pe1-pe2", "value": "92"},
                "generatorURL": "http://prometheus.example:9090/graph",
            }
            r = await am.post("/api/v2/alerts", json=[alert])
            assert r.status_code == 200, r.text
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=5
        ) as corr:

            async def stored() -> list[dict[str, Any]]:
                rows: list[dict[str, Any]] = (
                    await corr.get("/api/v1/alerts", params={"source": "alertmanager"})
                ).json()
                return rows

            (row,) = await wait_for(stored, timeout=30)
        assert row["link"] == "pe1-pe2" and row["severity"] == "critical"
        assert row["disposition"] == "new_incident" and row["incident_id"]
        assert len(row["fingerprint"]) == 16  # Alertmanager's own fingerprint
        assert row["labels"]["alertname"] == "LinkLatencyHigh"
        ticket = await wait_for(lambda: peers.of("io", "new_ticket"), timeout=30)
        assert ticket[0]["degraded_links"] == ["pe1-pe2"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.should_exit = True
        await serving
