"""The service inventory export: JSON or CSV, file or URL, TTL cache, defaults."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import respx

from shared.errors import SouthboundError
from shared.inventory import ServiceInventory, parse_inventory

JSON_EXPORT = {
    "services": [
        {
            "vpn-id": "vpn-001",
            "name": "bank-east-platinum-001",
            "sla-tier": "platinum",
            "bandwidth-mbps": 500,
            "customer": "bank-east",
        }
    ]
}
CSV_EXPORT = (
    "vpn-id,name,sla-tier,bandwidth-mbps,customer\n"
    "vpn-001,bank-east-platinum-001,Platinum,500,bank-east\n"
    "vpn-002,retail-gold,gold,250.5,\n"
    ",,,,\n"
)
LAB = "http://lab.example/lab/oss/service-inventory"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_json_and_csv_parse_alike() -> None:
    from_json = parse_inventory(json.dumps(JSON_EXPORT))
    from_csv = parse_inventory(CSV_EXPORT)
    assert from_json["vpn-001"] == from_csv["vpn-001"]
    entry = from_csv["vpn-001"]
    assert (entry.name, entry.sla_tier, entry.bandwidth_mbps, entry.customer) == (
        "bank-east-platinum-001",
        "platinum",
        500,
        "bank-east",
    )
    assert from_csv["vpn-002"].customer is None
    assert from_csv["vpn-002"].bandwidth_mbps == 250.5
    assert set(from_csv) == {"vpn-001", "vpn-002"}


@pytest.mark.parametrize(
    "text",
    [
        "vpn-id,name,sla-tier,bandwidth-mbps,customer\nvpn-1,x,,10,\n",
        "vpn-id,name,sla-tier,bandwidth-mbps,customer\nvpn-1,x,gold,lots,\n",
        '{"services": {"vpn-id": "x"}}',
        "{not json",
    ],
)
def test_a_broken_export_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_inventory(text)


async def test_a_file_is_read_once_per_ttl(tmp_path: Path) -> None:
    path = tmp_path / "services.csv"
    path.write_text(CSV_EXPORT)
    clock = Clock()
    inventory = ServiceInventory(str(path), ttl_s=60, clock=clock)
    assert (await inventory.lookup("vpn-001")).sla_tier == "platinum"
    path.write_text(CSV_EXPORT.replace("Platinum", "gold"))
    clock.now = 59
    assert (await inventory.lookup("vpn-001")).sla_tier == "platinum"
    clock.now = 61
    assert (await inventory.lookup("vpn-001")).sla_tier == "gold"
    assert inventory.reads == 2


async def test_a_missing_service_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps(JSON_EXPORT))
    inventory = ServiceInventory(str(path), default_tier="silver", default_bandwidth_mbps=100)
    entry = await inventory.lookup("vpn-999")
    assert (entry.vpn_id, entry.sla_tier, entry.bandwidth_mbps) == ("vpn-999", "silver", 100)
    assert entry.name is None


async def test_an_unreadable_first_read_is_a_southbound_error(tmp_path: Path) -> None:
    inventory = ServiceInventory(str(tmp_path / "absent.json"))
    with pytest.raises(SouthboundError):
        await inventory.entries()
    broken = tmp_path / "broken.json"
    broken.write_text("{oops")
    with pytest.raises(SouthboundError):
        await ServiceInventory(str(broken)).entries()


async def test_a_failed_reread_serves_the_previous_read(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps(JSON_EXPORT))
    clock = Clock()
    inventory = ServiceInventory(str(path), ttl_s=10, clock=clock)
    await inventory.entries()
    path.unlink()
    clock.now = 11
    assert "vpn-001" in await inventory.entries()


async def test_a_url_is_read_with_the_token_and_csv_is_accepted() -> None:
    router = respx.MockRouter(assert_all_called=False)
    route = router.get(LAB).respond(200, text=CSV_EXPORT, headers={"content-type": "text/csv"})
    inventory = ServiceInventory(
        LAB, token="mesh-token", transport=httpx.MockTransport(router.async_handler)
    )
    entries, again = await asyncio.gather(inventory.entries(), inventory.entries())
    assert set(entries) == {"vpn-001", "vpn-002"} and again == entries
    assert route.call_count == 1  # concurrent readers share one read
    assert route.calls.last.request.headers["Authorization"] == "Bearer mesh-token"
    await inventory.aclose()


@pytest.mark.parametrize(("status", "transient"), [(503, True), (404, False)])
async def test_a_failing_url(status: int, transient: bool) -> None:
    router = respx.MockRouter(assert_all_called=False)
    router.get(LAB).respond(status, text="no")
    inventory = ServiceInventory(LAB, transport=httpx.MockTransport(router.async_handler))
    with pytest.raises(SouthboundError) as caught:
        await inventory.entries()
    assert caught.value.transient is transient
    await inventory.aclose()


async def test_an_unreachable_url_is_transient() -> None:
    router = respx.MockRouter(assert_all_called=False)
    router.get(LAB).mock(side_effect=httpx.ConnectError("refused"))
    inventory = ServiceInventory(LAB, transport=httpx.MockTransport(router.async_handler))
    with pytest.raises(SouthboundError) as caught:
        await inventory.entries()
    assert caught.value.transient
    await inventory.aclose()
