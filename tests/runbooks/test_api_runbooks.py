"""IO's REST surface for runbooks, connections and credentials, forwarded to the orchestrator:
roles, status codes, validation problems passed through, secrets never answered, and an SSH
session on a real OpenSSH server with every credential use audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.runbooks.session_mesh import cxm_mesh, document, local_step
from tests.runbooks.sshd import Sshd, sshd

SECRET = "hunter2-do-not-show"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("sshd-api")) as running:
        yield running


def _no_secret(value: Any, *secrets: str) -> None:
    text = json.dumps(value)
    for secret in secrets:
        assert secret not in text


async def test_runbooks_json_and_yaml_versions_and_validation_problems(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        viewer = await cxm.user("vera", "viewer")
        doc = document("disk", [local_step("df", "df -h")])
        created = await cxm.io.post("/api/v1/runbooks", json=doc, headers=alice)
        assert created.status_code == 201 and created.json() == {"runbook_id": "disk", "version": 1}
        again = await cxm.io.post("/api/v1/runbooks", json=doc, headers=alice)
        assert again.status_code == 409, again.text

        doc["title"] = "Disk, version two"
        put = await cxm.io.put(
            "/api/v1/runbooks/disk",
            content=yaml.safe_dump(doc),
            headers={**alice, "Content-Type": "application/yaml"},
        )
        assert put.status_code == 200 and put.json()["version"] == 2, put.text
        one = await cxm.io.get("/api/v1/runbooks/disk", headers=viewer)
        assert one.json()["document"]["title"] == "Disk, version two"
        first = await cxm.io.get("/api/v1/runbooks/disk", params={"version": 1}, headers=viewer)
        assert first.json()["version"] == 1
        listed = await cxm.io.get("/api/v1/runbooks", headers=viewer)
        assert [r["runbook_id"] for r in listed.json()["runbooks"]] == ["disk"]
        missing = await cxm.io.get("/api/v1/runbooks/nope", headers=viewer)
        assert missing.status_code == 404
        refused = await cxm.io.post("/api/v1/runbooks", json=doc, headers=viewer)
        assert refused.status_code == 403

        bad = document("bad", [local_step("slow", "sleep 1", timeout_s=-1)])
        response = await cxm.io.post("/api/v1/runbooks", json=bad, headers=alice)
        assert response.status_code == 422, response.text
        problems = response.json()["detail"]["problems"]
        assert {"field": 'steps.main[0] (name "slow").timeout_s', "message": "must be > 0"} in (
            problems
        )
        broken_yaml = await cxm.io.post(
            "/api/v1/runbooks",
            content="id: [unclosed",
            headers={**alice, "Content-Type": "application/yaml"},
        )
        assert broken_yaml.status_code == 422
        assert "not valid YAML" in broken_yaml.json()["detail"]["message"]
        wrong_type = await cxm.io.post(
            "/api/v1/runbooks", content="x", headers={**alice, "Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 415
        unknown = await cxm.io.post(
            "/api/v1/tickets/INC-2026-0999/runbook-sessions",
            json={"runbook_id": "disk"},
            headers=alice,
        )
        assert unknown.status_code == 404
        await cxm.ticket("INC-2026-0201", host="web-03")
        no_runbook = await cxm.io.post(
            "/api/v1/tickets/INC-2026-0201/runbook-sessions",
            json={"runbook_id": "nope"},
            headers=alice,
        )
        assert no_runbook.status_code == 404
        assert no_runbook.json()["detail"]["code"] == "runbook_not_found"
        no_session = await cxm.io.get("/api/v1/runbook-sessions/RBS-000000000000", headers=alice)
        assert no_session.status_code == 404


async def test_credentials_are_admin_only_and_never_answered(tmp_path: Path) -> None:
    async with cxm_mesh(tmp_path) as cxm:
        alice = await cxm.user("alice")
        body = {"name": "api-token", "kind": "token", "secret": SECRET}
        refused = await cxm.io.post("/api/v1/credentials", json=body, headers=alice)
        assert refused.status_code == 403
        created = await cxm.io.post("/api/v1/credentials", json=body, headers=cxm.admin())
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "api-token" and "secret" not in created.json()
        duplicate = await cxm.io.post("/api/v1/credentials", json=body, headers=cxm.admin())
        assert duplicate.status_code == 409
        invalid = await cxm.io.post(
            "/api/v1/credentials",
            json={"name": "p", "kind": "password", "secret": SECRET},
            headers=cxm.admin(),
        )
        assert invalid.status_code == 422
        assert invalid.json()["detail"]["problems"][0]["field"] == "username"
        bad_kind = await cxm.io.post(
            "/api/v1/credentials",
            json={"name": "k", "kind": "pgp", "secret": SECRET},
            headers=cxm.admin(),
        )
        assert bad_kind.status_code == 422
        listed = await cxm.io.get("/api/v1/credentials", headers=cxm.admin())
        rotated = await cxm.io.post("/api/v1/credentials/rotate-key", headers=cxm.admin())
        assert rotated.status_code == 200 and rotated.json()["rotated"] == 1
        assert (
            await cxm.io.post("/api/v1/credentials/rotate-key", headers=alice)
        ).status_code == 403
        for answer in (created, duplicate, invalid, bad_kind, listed, rotated):
            _no_secret(answer.json(), SECRET)
        gone = await cxm.io.delete("/api/v1/credentials/api-token", headers=cxm.admin())
        assert gone.status_code == 204
        again = await cxm.io.delete("/api/v1/credentials/api-token", headers=cxm.admin())
        assert again.status_code == 404
        bad_connection = await cxm.io.post(
            "/api/v1/connections",
            json={"name": "x", "environment": "moon", "connector": "ssh"},
            headers=alice,
        )
        assert bad_connection.status_code == 422
        fields = {p["field"] for p in bad_connection.json()["detail"]["problems"]}
        assert {"environment", "host"} <= fields


async def test_an_ssh_session_on_a_real_server_audits_every_credential_use(
    tmp_path: Path, server: Sshd
) -> None:
    async with cxm_mesh(tmp_path, approval_required_for="runbook") as cxm:
        alice = await cxm.user("alice")
        bob = await cxm.user("bob")
        created = await cxm.io.post(
            "/api/v1/credentials",
            json={
                "name": "lab-key",
                "kind": "ssh_key",
                "username": server.user,
                "secret": server.client_key,
            },
            headers=cxm.admin(),
        )
        assert created.status_code == 201, created.text
        connection = {
            "name": "web-03",
            "environment": "dev",
            "connector": "ssh",
            "host": "127.0.0.1",
            "port": server.port,
            "credential": "lab-key",
            "host_key": server.host_key_line,
        }
        response = await cxm.io.post("/api/v1/connections", json=connection, headers=alice)
        assert response.status_code == 201, response.text
        listed = await cxm.io.get("/api/v1/connections", headers=alice)
        assert [c["name"] for c in listed.json()["connections"]] == ["web-03"]
        tested = await cxm.io.post("/api/v1/connections/web-03/test", headers=alice)
        assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
        absent = await cxm.io.post("/api/v1/connections/nope/test", headers=alice)
        assert absent.json()["ok"] is False and "missing_connection" in absent.json()["detail"]

        step = {
            "name": "greet",
            "connector": "ssh",
            "connection": "{{ticket.host}}",
            "command": "echo hello {{ticket.labels.who}}",
            "expect": {"contains": "hello ops team"},
        }
        await cxm.runbook(document("ssh-greet", [step]), alice)
        await cxm.ticket("INC-2026-0301", host="web-03", labels={"who": "ops team"})
        session_id = await cxm.start("INC-2026-0301", "ssh-greet", alice)
        approval = await cxm.pending("INC-2026-0301")  # the policy gates every runbook step
        assert approval["details"]["command"] == "echo hello 'ops team'"
        decided = await cxm.io.post(
            f"/api/v1/approvals/{approval['approval_id']}/approve", json={}, headers=bob
        )
        assert decided.status_code == 200, decided.text
        done = await cxm.settled(session_id)
        assert done["status"] == "completed", done
        assert done["steps"][0]["output"].strip() == "hello ops team"
        _no_secret(done, server.client_key.splitlines()[1])

        uses = [
            r.payload["details"]
            for r in cxm.net.to("audit")
            if r.payload["event_type"] == "credential_used"
        ]
        assert [u["purpose"] for u in uses] == ["test", "run"]
        run = uses[1]
        assert run["credential"] == "lab-key" and run["session_id"] == session_id
        assert run["step"] == "greet" and run["started_by"] == "alice"
        assert run["approved_by"] == "bob"
        _no_secret(uses, server.client_key.splitlines()[1])
