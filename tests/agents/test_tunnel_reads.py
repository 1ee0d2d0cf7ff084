"""Tunnel Provisioning's kept reads (issue 16): what a burst shares and what the TTL spares
must never hide a change CNC made after the read."""

from __future__ import annotations

import asyncio
from typing import Any

from services.tunnel.app import Kept, create_app
from services.tunnel.settings import TunnelSettings
from shared.settings import Settings
from tests.agents.fakes import ALL_TE, FakeNetwork, run_task
from tests.support import running

KEPT = TunnelSettings(topology_ttl_s=3600.0, ends_ttl_s=3600.0)
"""TTLs no test outlives: a read the agent makes again is one it had to make."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A read that counts itself and answers the current value."""

    def __init__(self) -> None:
        self.value = "v1"
        self.reads = 0

    async def __call__(self) -> str:
        self.reads += 1
        return self.value


async def test_a_kept_read_serves_until_its_ttl_and_then_reads_again() -> None:
    clock, source = Clock(), Source()
    kept = Kept(source, ttl_s=10.0, clock=clock)
    assert await kept() == "v1"
    source.value = "v2"
    clock.now = 10.0
    assert await kept() == "v1" and source.reads == 1  # within the TTL
    clock.now = 10.5
    assert await kept() == "v2" and source.reads == 2  # the change made after the read


async def test_a_kept_read_the_caller_refuses_is_read_again_at_once() -> None:
    clock, source = Clock(), Source()
    kept = Kept(source, ttl_s=10.0, clock=clock)
    await kept()
    source.value = "v2"
    assert await kept(lambda value: value == "v2") == "v2"
    assert source.reads == 2
    assert await kept() == "v2" and source.reads == 2  # the new read is the kept one now


async def test_callers_during_a_read_share_it() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        entered.set()
        await release.wait()
        return reads

    kept = Kept(read, ttl_s=10.0)
    callers = [asyncio.create_task(kept()) for _ in range(3)]
    await entered.wait()  # every caller was scheduled before the read itself ran
    release.set()
    assert await asyncio.gather(*callers) == [1, 1, 1]
    assert reads == 1 and kept.reads == 1


def _provision(incident: str, path: list[str], **kw: Any) -> dict[str, Any]:
    return {"incident_id": incident, "head_end": path[0], "end_point": path[-1], "path": path, **kw}


async def test_the_topology_is_kept_across_bursts_but_a_refused_path_is_checked_afresh(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    """p4 supports no TE type: refused. Once CNC says it supports them all, the next
    provisioning through it succeeds at once, long before the kept topology's TTL."""
    async with running(create_app(agent_settings, tunnel_settings=KEPT)) as client:
        first = await run_task(
            client, "provision_tunnel", _provision("INC-1", ["pe1", "p1", "p2", "pe4"])
        )
        assert first.status_code == 200, first.text
        reads = net.topology_reads
        second = await run_task(
            client, "provision_tunnel", _provision("INC-2", ["pe1", "p3", "pe4"])
        )
        assert second.status_code == 200, second.text
        assert net.topology_reads == reads  # the kept topology carried the second path
        refused = await run_task(
            client, "provision_tunnel", _provision("INC-3", ["pe1", "p4", "pe4"])
        )
        assert refused.status_code == 422
        assert refused.json()["detail"]["code"] == "te_unsupported"
        assert net.topology_reads > reads  # refused by the kept read: checked on a fresh one
        p4 = next(n for n in net.topology["nodes"] if n["node-id"] == "p4")
        p4.update({"te-capabilities": ALL_TE, "prefix-sid": 16014})
        now = await run_task(client, "provision_tunnel", _provision("INC-4", ["pe1", "p4", "pe4"]))
    assert now.status_code == 200, now.text
    assert now.json()["result"]["te_type"] == "sr-mpls"
    assert net.creates[-1]["sr-policy-path"]["hops"][0]["hop"]["node-ipv4-sid"] == 16014


async def test_a_node_cnc_added_after_the_read_is_found(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings, tunnel_settings=KEPT)) as client:
        before = await run_task(
            client, "provision_tunnel", _provision("INC-1", ["pe1", "p1", "p2", "pe4"])
        )
        assert before.status_code == 200, before.text
        net.topology["nodes"].append(
            {
                "node-id": "p5",
                "loopback": "10.0.0.15",
                "prefix-sid": 16015,
                "te-capabilities": ALL_TE,
            }
        )
        for a, b in (("pe1", "p5"), ("p5", "pe4")):
            net.topology["links"].append(
                {
                    "link-id": f"{a}-{b}",
                    "source": a,
                    "destination": b,
                    "igp-metric": 10,
                    "te-metric": 10,
                    "delay-ms": 1,
                    "capacity-mbps": 10000,
                    "srlgs": [],
                    "oper-status": "up",
                }
            )
        after = await run_task(
            client, "provision_tunnel", _provision("INC-2", ["pe1", "p5", "pe4"])
        )
    assert after.status_code == 200, after.text
    assert after.json()["result"]["hops"] == ["p5", "pe4"]


async def test_a_service_cnc_added_after_the_ends_were_read_is_steered(
    agent_settings: Settings, net: FakeNetwork
) -> None:
    async with running(create_app(agent_settings, tunnel_settings=KEPT)) as client:
        tunnel = (
            await run_task(
                client, "provision_tunnel", _provision("INC-1", ["pe1", "p1", "p2", "pe4"])
            )
        ).json()["result"]
        steer = {"incident_id": "INC-1", "tunnel_id": tunnel["tunnel_id"]}
        first = await run_task(client, "steer_traffic", {**steer, "service_ids": ["vpn-x1"]})
        assert first.json()["result"]["services"] == ["vpn-x1"]
        net.services.append({**net.services[-1], "vpn-id": "vpn-x9", "name": "new-customer"})
        again = await run_task(
            client, "steer_traffic", {**steer, "service_ids": ["vpn-x1", "vpn-x9"]}
        )
    assert again.status_code == 200, again.text
    assert again.json()["result"]["services"] == ["vpn-x1", "vpn-x9"]
    assert net.mappings["vpn-x9"] == tunnel["color"]
