"""The connection inventory on SQLite and on the real PostgreSQL server: storage, validation
errors that name their field, and connection tests that say what is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks import inventory as inv
from services.orchestrator.runbooks.inventory import (
    ConnectionCreate,
    ConnectionExists,
    Inventory,
)
from tests.runbooks.helpers import Runbooks


def public_key(tmp_path: Path) -> str:
    """A server's public key as its ``.pub`` file holds it: ``<type> <base64> <comment>``."""
    path = tmp_path / "host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


async def test_create_get_list_delete(engine: AsyncEngine, tmp_path: Path) -> None:
    inventory = await Inventory.open(engine)
    key = public_key(tmp_path)
    ssh = await inventory.create(
        ConnectionCreate(
            name="edge-1",
            environment="prod",
            connector="ssh",
            host="10.0.0.1",
            credential="ops-key",
            host_key=key,
            options={"max_sessions": 4},
        )
    )
    # A bare key gets the host pattern OpenSSH would write; the port defaults to 22.
    assert ssh.port == 22 and ssh.host_key == f"10.0.0.1 {key}"
    await inventory.create(
        ConnectionCreate(
            name="metrics-db",
            environment="staging",
            connector="database",
            url="postgresql://reader@db.example:5432/metrics",
            credential="db-reader",
        )
    )
    await inventory.create(ConnectionCreate(name="here", environment="dev", connector="local"))

    got = await inventory.get("edge-1")
    assert got is not None and got.model_dump(exclude={"created_at", "updated_at"}) == (
        ssh.model_dump(exclude={"created_at", "updated_at"})
    )
    assert got.options == {"max_sessions": 4}
    assert [c.name for c in await inventory.list_all()] == ["edge-1", "here", "metrics-db"]
    assert [c.name for c in await inventory.list_all(environment="staging")] == ["metrics-db"]
    with pytest.raises(ConnectionExists, match="edge-1"):
        await inventory.create(
            ConnectionCreate(name="edge-1", environment="dev", connector="local")
        )
    assert await inventory.delete("edge-1") is True
    assert await inventory.delete("edge-1") is False
    assert await inventory.get("edge-1") is None


def error_locs(data: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as err:
        ConnectionCreate.model_validate(data)
    return {tuple(e["loc"]): e["msg"] for e in err.value.errors()}


def test_validation_errors_name_the_field(tmp_path: Path) -> None:
    key = public_key(tmp_path)
    base = {"name": "c1", "environment": "prod"}
    assert list(error_locs({**base, "connector": "ssh"})) == [("host",)]
    assert list(error_locs({**base, "environment": "qa", "connector": "local"})) == [
        ("environment",)
    ]
    assert list(error_locs({**base, "connector": "http"})) == [("url",)]
    assert list(error_locs({**base, "connector": "http", "url": "ftp://x"})) == [("url",)]
    assert list(error_locs({**base, "connector": "database", "url": "mysql://db/x"})) == [("url",)]
    locs = error_locs({**base, "connector": "database", "url": "postgresql://u:pw@db/x"})
    assert "credential" in locs[("url",)]
    assert list(
        error_locs({**base, "connector": "database", "url": "sqlite:///x", "host": "h"})
    ) == [("host",)]
    assert list(error_locs({**base, "connector": "local", "credential": "c"})) == [("credential",)]
    # A key line for another host (or port) would never verify this one: caught here.
    locs = error_locs(
        {**base, "connector": "ssh", "host": "10.0.0.1", "port": 2222, "host_key": f"other {key}"}
    )
    assert list(locs) == [("host_key",)] and "[10.0.0.1]:2222" in locs[("host_key",)]
    assert list(
        error_locs({**base, "connector": "ssh", "host": "h", "host_key": "not a key line"})
    ) == [("host_key",)]
    locs = error_locs({**base, "connector": "ssh", "host": "h", "options": {"max_sesions": 3}})
    assert list(locs) == [("options",)] and "max_sesions" in locs[("options",)]
    locs = error_locs({**base, "connector": "ssh", "host": "h", "options": {"pty": "yes"}})
    assert list(locs) == [("options",)] and "pty" in locs[("options",)]
    locs = error_locs({**base, "connector": "ssh", "host": "h", "options": {"max_sessions": True}})
    assert list(locs) == [("options",)]


def test_host_key_line_for_a_port(tmp_path: Path) -> None:
    key = public_key(tmp_path)
    made = ConnectionCreate(
        name="c", environment="dev", connector="ssh", host="127.0.0.1", port=2222, host_key=key
    )
    assert made.host_key == f"[127.0.0.1]:2222 {key}"
    given = ConnectionCreate(
        name="c",
        environment="dev",
        connector="ssh",
        host="127.0.0.1",
        port=2222,
        host_key=f"[127.0.0.1]:2222 {key}",
    )
    assert given.host_key == made.host_key


async def test_connection_test_says_what_is_missing(runbooks: Runbooks) -> None:
    missing = await inv.test_connection(runbooks.inventory, runbooks.pool, "nope")
    assert not missing.ok and missing.kind == "missing_connection"
    assert missing.detail.startswith("missing_connection:") and "nope" in missing.detail

    await runbooks.inventory.create(
        ConnectionCreate(name="here", environment="dev", connector="local")
    )
    local = await inv.test_connection(runbooks.inventory, runbooks.pool, "here")
    assert local.ok and local.latency_ms >= 0

    await runbooks.inventory.create(
        ConnectionCreate(
            name="api",
            environment="dev",
            connector="http",
            url="http://127.0.0.1:9/",
            credential="no-such-credential",
        )
    )
    result = await inv.test_connection(runbooks.inventory, runbooks.pool, "api")
    assert not result.ok and result.kind == "missing_credential"
    assert "no-such-credential" in result.detail
    assert runbooks.uses and runbooks.uses[-1].purpose == "test"
