"""Settings and ``southbound_clients``: clients built from settings, the TGT deleted on exit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import respx
from pydantic import SecretStr

from shared.inventory import ServiceInventory
from shared.settings import Settings
from shared.southbound import CncClient, PcaClient, southbound_clients


def test_southbound_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, lab_url="http://127.0.0.1:8010/")
    assert settings.cnc_username == settings.pca_username == "cxm"
    assert isinstance(settings.cnc_password, SecretStr)
    assert settings.cnc_password.get_secret_value() == "cxm-lab"
    assert settings.pca_password.get_secret_value() == "cxm-lab"
    assert "cxm-lab" not in repr(settings)
    assert settings.cnc_service == "https://127.0.0.1:30603/app-dashboard"
    assert settings.cnc_token_refresh_s == 300
    assert settings.cnc_read_concurrency == 16
    assert settings.pca_window_s == 60
    assert settings.service_inventory_source == "http://127.0.0.1:8010/lab/oss/service-inventory"
    assert settings.service_inventory_ttl_s == 60
    assert settings.default_sla_tier == "silver"
    assert settings.default_service_bandwidth_mbps == 100
    assert not hasattr(settings, "cnc_token") and not hasattr(settings, "pca_token")


def test_southbound_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXM_CNC_URL", "https://cnc.example:30603")
    monkeypatch.setenv("CXM_CNC_PASSWORD", "s3cret")
    monkeypatch.setenv("CXM_CNC_SERVICE_URL", "https://sso.example/app")
    monkeypatch.setenv("CXM_SERVICE_INVENTORY", "/srv/oss/services.csv")
    settings = Settings(data_dir=tmp_path)
    assert settings.cnc_password.get_secret_value() == "s3cret"
    assert settings.cnc_service == "https://sso.example/app"
    assert settings.service_inventory_source == "/srv/oss/services.csv"


async def test_southbound_clients_open_from_settings_and_delete_the_tgt(tmp_path: Path) -> None:
    lab = "http://lab.test"
    router = respx.MockRouter(base_url=lab, assert_all_called=False)
    router.post("/crosswork/sso/v1/tickets").respond(201, text="TGT-9")
    router.post("/crosswork/sso/v1/tickets/TGT-9").respond(200, text="a.e30.c")
    logout = router.delete("/crosswork/sso/v1/tickets/TGT-9").respond(200)
    patch = router.patch(url__regex=r".*/vpn-services$").respond(204)
    inventory = router.get("/lab/oss/service-inventory").respond(200, json={"services": []})
    settings = Settings(
        data_dir=tmp_path, lab_url=lab, mesh_token="mesh", cnc_username="ops", pca_url=lab
    )
    app = SimpleNamespace(
        state=SimpleNamespace(
            settings=settings, southbound_transport=httpx.MockTransport(router.async_handler)
        )
    )
    async with southbound_clients(app):
        cnc, pca = app.state.cnc, app.state.pca
        assert isinstance(cnc, CncClient) and isinstance(pca, PcaClient)
        assert isinstance(app.state.inventory, ServiceInventory)
        assert cnc.service_url == "https://lab.test:30603/app-dashboard"
        await cnc.map_services([("vpn-1", "l3vpn")], 1001)
        assert patch.calls.last.request.headers["Authorization"] == "Bearer a.e30.c"
        assert await app.state.inventory.entries() == {}
        assert inventory.calls.last.request.headers["Authorization"] == "Bearer mesh"
    assert logout.call_count == 1
    assert cnc.http.is_closed and pca.http.is_closed
