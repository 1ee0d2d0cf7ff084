"""Secrets from files: `cxm secrets init`, ``*_FILE`` settings, compose needing no variable.

Compose cannot run here (no Docker engine), so the test validates the file with Debian's
``docker-compose config``, with and without the user's own variables, and runs natively the
very commands compose runs: ``cxm secrets init --dir … --owner …`` (the one-shot ``secrets``
service), then ``cxm agent NAME`` with nothing but ``CXM_MESH_TOKEN_FILE`` pointing at what it
wrote.
"""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.settings import AGENT_PORTS, Settings, load_settings
from tests.support import ROOT, Mesh, free_port, mesh_env

pytestmark = pytest.mark.xdist_group("processes")

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SECRETS_DIR = "/run/secrets/cxm"


def cxm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxm.cli", *args],
        env=env or {k: v for k, v in os.environ.items() if not k.startswith("CXM_")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config(**variables: str) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.skip("apt-get install docker-compose (make system-deps)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target → (source, mode) of a service's volumes (docker-compose 1.x prints the short form)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":") if isinstance(volume, str) else [volume]
        found[target] = (source, mode[0] if mode else "rw")
    return found


# --- the settings --------------------------------------------------------------------------------


def test_a_file_variable_gives_the_value_and_the_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CXM_")]:
        monkeypatch.delenv(key)
    (tmp_path / "token").write_text("from-the-file\n")
    (tmp_path / "audit-token").write_text("audit-only")
    (tmp_path / "pw").write_text("p@ss/word\n")
    monkeypatch.setenv("CXM_MESH_TOKEN_FILE", str(tmp_path / "token"))
    assert Settings().mesh_token == "from-the-file"
    monkeypatch.setenv("CXM_AUDIT__MESH_TOKEN_FILE", str(tmp_path / "audit-token"))
    assert load_settings("audit").mesh_token == "audit-only"
    assert load_settings("io").mesh_token == "from-the-file"
    monkeypatch.setenv("CXM_MESH_TOKEN", "explicit")
    assert Settings().mesh_token == "explicit"

    # a password kept out of the URL: filled in (percent-encoded) only where the URL has none
    monkeypatch.setenv("CXM_DATABASE_PASSWORD_FILE", str(tmp_path / "pw"))
    s = Settings(database_url="postgresql://cxm@db:5432/cxm_io")
    assert s.db_url("io") == "postgresql+asyncpg://cxm:p%40ss%2Fword@db:5432/cxm_io"
    assert "p@ss" not in repr(s)
    own = Settings(database_url="postgresql://cxm:own@db:5432/cxm_io")
    assert own.db_url("io") == "postgresql+asyncpg://cxm:own@db:5432/cxm_io"


def test_a_missing_or_empty_secret_file_stops_the_agent_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    (tmp_path / "empty").write_text("")
    for path, why in ((tmp_path / "absent", "No such file"), (tmp_path / "empty", "is empty")):
        out = cxm("agent", "audit", env={**env, "CXM_MESH_TOKEN_FILE": str(path)})
        assert out.returncode == 2
        assert "CXM_MESH_TOKEN_FILE" in out.stderr and why in out.stderr, out.stderr
        assert "Traceback" not in out.stderr + out.stdout


# --- `cxm secrets init`, natively -----------------------------------------------------------------


def test_secrets_init_writes_private_files_once(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    me = getpass.getuser()
    first = cxm("secrets", "init", "--dir", str(secrets), "--owner", me)
    assert first.returncode == 0, first.stderr
    assert "mesh-token created" in first.stdout and "db-password created" in first.stdout
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    values = {}
    for name in ("mesh-token", "db-password"):
        path = secrets / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert path.stat().st_uid == os.getuid()
        values[name] = path.read_text()
        assert len(values[name]) >= 32
        assert values[name] not in first.stdout + first.stderr  # never printed

    again = cxm("secrets", "init", "--dir", str(secrets), "--owner", me)
    assert again.returncode == 0, again.stderr
    assert "mesh-token kept" in again.stdout and "db-password kept" in again.stdout
    assert {n: (secrets / n).read_text() for n in values} == values

    # the operator's own value replaces the generated one, still 0600
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXM_")}
    mine = cxm("secrets", "init", "--dir", str(secrets), env={**env, "CXM_MESH_TOKEN": "mine-1"})
    assert mine.returncode == 0, mine.stderr
    assert "mesh-token replaced" in mine.stdout and "db-password kept" in mine.stdout
    assert (secrets / "mesh-token").read_text() == "mine-1"
    assert stat.S_IMODE((secrets / "mesh-token").stat().st_mode) == 0o600
    assert (secrets / "db-password").read_text() == values["db-password"]

    unknown = cxm("secrets", "init", "--dir", str(secrets), "--owner", "no-such-user-cxm")
    assert unknown.returncode == 2 and "no-such-user-cxm" in unknown.stderr


def test_an_agent_given_only_the_token_file_requires_that_token(tmp_path: Path) -> None:
    """What compose does: init writes the file, the agent reads CXM_MESH_TOKEN_FILE."""
    secrets = tmp_path / "secrets"
    assert cxm("secrets", "init", "--dir", str(secrets)).returncode == 0
    token = (secrets / "mesh-token").read_text()
    ports = {name: free_port() for name in AGENT_PORTS}
    env = mesh_env(tmp_path, ports, {"CXM_MESH_TOKEN_FILE": str(secrets / "mesh-token")})
    del env["CXM_MESH_TOKEN"]
    m = Mesh(tmp_path, env, ports)
    try:
        m.start("audit")
        m.wait_healthy(["audit"])
        task = {"task_type": "no_such_task", "payload": {}}
        url = f"{m.url('audit')}/a2a/tasks"
        assert httpx.post(url, json=task, timeout=10).status_code == 401
        wrong = httpx.post(url, json=task, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        right = httpx.post(url, json=task, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert right.status_code == 400, right.text  # past auth: the task type is what is wrong
        assert "unknown task_type" in right.text
    finally:
        m.stop("audit")
    assert token not in m.log("audit")


# --- compose --------------------------------------------------------------------------------------


def test_compose_needs_no_variable_and_keeps_secrets_in_files() -> None:
    services = compose_config()["services"]
    assert set(services) == {*AGENT_PORTS, "postgres", "secrets"}

    init = services["secrets"]
    assert init["command"] == ["secrets", "init", "--dir", SECRETS_DIR, "--owner", "cxm"]
    assert init["restart"] == "no"
    assert init["environment"] == {"CXM_MESH_TOKEN": "", "CXM_DATABASE_PASSWORD": ""}
    assert mounts(init) == {SECRETS_DIR: ("cxm-secrets", "rw")}

    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == f"{SECRETS_DIR}/db-password"
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    assert mounts(pg)[SECRETS_DIR] == ("cxm-secrets", "ro")
    assert pg["depends_on"]["secrets"]["condition"] == "service_completed_successfully"

    for name, port in AGENT_PORTS.items():
        svc = services[name]
        assert svc["command"] == ["agent", name]
        assert str(port) in str(svc["healthcheck"]["test"])
        assert svc["ports"] == [{"published": port, "target": port}]
        env = svc["environment"]
        assert env["CXM_MESH_TOKEN_FILE"] == f"{SECRETS_DIR}/mesh-token"
        assert env["CXM_DATABASE_PASSWORD_FILE"] == f"{SECRETS_DIR}/db-password"
        assert "CXM_MESH_TOKEN" not in env and "CXM_DATABASE_PASSWORD" not in env
        if "CXM_DATABASE_URL" in env:
            assert env["CXM_DATABASE_URL"].startswith("postgresql://cxm@postgres:5432/")
        assert mounts(svc)[SECRETS_DIR] == ("cxm-secrets", "ro")
        deps = svc["depends_on"]
        assert deps.pop("secrets")["condition"] == "service_completed_successfully"
        for dep in deps.values():
            assert dep["condition"] == "service_healthy"
    assert services["orchestrator"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_stores_the_users_own_secrets() -> None:
    services = compose_config(CXM_MESH_TOKEN="my-token", CXM_DATABASE_PASSWORD="my-db-pw")[
        "services"
    ]
    assert services["secrets"]["environment"] == {
        "CXM_MESH_TOKEN": "my-token",
        "CXM_DATABASE_PASSWORD": "my-db-pw",
    }
    for name, svc in services.items():
        if name != "secrets":
            assert "my-token" not in str(svc) and "my-db-pw" not in str(svc), name
