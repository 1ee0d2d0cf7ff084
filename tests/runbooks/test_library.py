"""The shipped runbook library: every file parses and is complete, every step renders for a
realistic ticket, every shell command is valid POSIX sh, and the disk-full runbook (run for
real through /bin/sh) and the PostgreSQL runbook (run for real on PostgreSQL) work."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from services.orchestrator.runbooks.actions import DbQuery, SshCommand, StepOutput
from services.orchestrator.runbooks.catalog import DEFAULT_LIBRARY_DIR, load_directory
from services.orchestrator.runbooks.documents import (
    TICKET_FIELDS,
    RunbookDocument,
    Step,
    judge,
    parse_runbook,
)
from services.orchestrator.runbooks.render import missing_values, render, render_connection
from shared.db import make_engine

FILES = sorted(DEFAULT_LIBRARY_DIR.glob("*.yaml"))

# A ticket that carries every label the library reads, the way alerts carry them.
FULL_TICKET: dict[str, Any] = {
    "id": "INC-2025-0042",
    "title": "Disk usage above 90% on web-03",
    "description": "filesystem / is 93% full",
    "host": "web-03",
    "service": "nginx.service",
    "severity": "high",
    "source": "alertmanager",
    "environment": "prod",
    "labels": {
        "path": "/var/tmp",
        "peer": "192.0.2.1",
        "device": "eth2",
        "process": "snmpd",
        "domain": "shop.example.com",
        "namespace": "shop",
        "pod": "checkout-7d9f8c5b6-x2x4z",
        "cluster": "prod-eu",
        "container": "api",
    },
}
CONNECTION_CONVENTION = re.compile(
    r"^(\{\{ticket\.host\}\}(-postgres|-http)?"
    r'|kubectl-\{\{ticket\.labels\.cluster \| default\("default"\)\}\})$'
)


@pytest.fixture(scope="module")
def library() -> list[RunbookDocument]:
    return load_directory(DEFAULT_LIBRARY_DIR)


def test_the_library_is_big_and_ids_are_unique(library: list[RunbookDocument]) -> None:
    assert len(FILES) >= 12
    assert len(library) == len(FILES)
    ids = [doc.id for doc in library]
    assert len(set(ids)) == len(ids)
    assert ids == [f.stem for f in FILES], "each file is named after its runbook's id"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_each_runbook_is_complete(path: Path) -> None:
    doc = parse_runbook(path.read_bytes(), "application/yaml")
    assert doc.steps.prechecks and doc.steps.main and doc.steps.postchecks and doc.rollback
    # Written the way alerts and tickets read, for the matcher.
    assert len(doc.keywords) >= 8
    assert len(doc.description) >= 300
    assert doc.labels.get("alertname") and doc.labels.get("category")
    assert doc.severities
    for placeholder in doc.placeholders():
        assert placeholder.field in TICKET_FIELDS or (
            placeholder.field == "labels" and placeholder.key
        ), placeholder.text
    for phase, _index, step in doc.iter_steps():
        where = f"{doc.id}: {phase} {step.name!r}"
        assert step.timeout_s is not None, where
        assert CONNECTION_CONVENTION.match(step.connection or ""), where
        if phase in ("prechecks", "postchecks"):
            # Checks only look: they may run again and never need a person.
            assert step.idempotent and not step.requires_approval, where
            assert not step.writes, where
        if step.writes:
            assert step.requires_approval, where


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_each_step_renders_and_is_valid_shell(path: Path) -> None:
    doc = parse_runbook(path.read_bytes(), "application/yaml")
    assert missing_values(doc, FULL_TICKET) == []
    for _phase, _index, step in doc.iter_steps():
        action = render(step, FULL_TICKET)
        assert render_connection(step, FULL_TICKET)
        if isinstance(action, SshCommand):
            for shell in ("dash", "bash"):
                checked = subprocess.run(
                    [shell, "-n", "-c", action.command], capture_output=True, text=True
                )
                assert checked.returncode == 0, (doc.id, step.name, shell, checked.stderr)


# --- linux-disk-full, for real -----------------------------------------------------------------

DAY = 86400


def disk_full() -> RunbookDocument:
    return parse_runbook(
        (DEFAULT_LIBRARY_DIR / "linux-disk-full.yaml").read_bytes(), "application/yaml"
    )


def run_step(step: Step, ticket: dict[str, Any], user: str | None = None) -> StepOutput:
    """Run an ssh step the way sshd would (the login shell with -c), here, as ``user``."""
    action = render(step, ticket)
    assert isinstance(action, SshCommand)
    argv = ["/bin/sh", "-c", action.command]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return StepOutput(output=done.stdout + done.stderr, exit_code=done.returncode)


def age(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


@pytest.fixture
def full_dir() -> Iterator[Path]:
    """A directory outside pytest's 0700 root, so another user can be let in."""
    base = Path(tempfile.mkdtemp(prefix="cxm-disk-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def fill(base: Path) -> dict[str, Path]:
    (base / "cache" / "deep").mkdir(parents=True)
    files = {
        "old": base / "cache" / "old.bin",
        "old_deep": base / "cache" / "deep" / "old.log",
        "new": base / "cache" / "new.bin",
        "edge": base / "edge.bin",
    }
    for path in files.values():
        path.write_bytes(b"\0" * 200_000)
    age(files["old"], 10)
    age(files["old_deep"], 30)
    age(files["edge"], 6.9)  # inside the 7-day guard: kept
    # A symlink to a file outside the directory: never followed, never deleted through.
    outside = base.parent / f"{base.name}-outside"
    outside.write_text("outside")
    age(outside, 100)
    (base / "link").symlink_to(outside)
    files["outside"] = outside
    return files


def test_disk_full_frees_old_files_and_verifies(full_dir: Path) -> None:
    doc = disk_full()
    files = fill(full_dir)
    ticket = {"host": "web-03", "labels": {"path": str(full_dir), "threshold_pct": "100"}}
    try:
        results = {}
        for phase in ("prechecks", "main", "postchecks"):
            for step in getattr(doc.steps, phase):
                out = run_step(step, ticket)
                ok, why = judge(step.expect, out)
                assert ok, (step.name, why, out.output)
                results[step.name] = out.output
        assert f"directory: {full_dir}" in results["show filesystem usage"]
        assert "2 files older than 7 days" in results["count files past the age guard"]
        assert "freed" in results["delete files older than the age guard"]
        assert not files["old"].exists() and not files["old_deep"].exists()
        assert files["new"].exists() and files["edge"].exists()
        assert (full_dir / "link").is_symlink() and files["outside"].read_text() == "outside"
        assert "no file older than 7 days" in results["no file older than the age guard is left"]
    finally:
        files["outside"].unlink(missing_ok=True)


def test_disk_full_postcheck_fails_above_the_threshold(full_dir: Path) -> None:
    doc = disk_full()
    usage = doc.steps.postchecks[0]
    out = run_step(usage, {"host": "h", "labels": {"path": str(full_dir), "threshold_pct": "0"}})
    ok, why = judge(usage.expect, out)
    assert not ok and "exit code 1" in why
    assert "threshold 0%" in out.output
    leftover = doc.steps.postchecks[1]
    (full_dir / "stale").write_text("x")
    age(full_dir / "stale", 8)
    out = run_step(leftover, {"host": "h", "labels": {"path": str(full_dir)}})
    assert out.exit_code == 1 and "stale" in out.output


def test_disk_full_age_zero_means_any_age(full_dir: Path) -> None:
    doc = disk_full()
    fresh = full_dir / "fresh.bin"
    fresh.write_bytes(b"x" * 1000)
    age(fresh, 0.01)
    out = run_step(doc.steps.main[0], {"labels": {"path": str(full_dir), "min_age_days": "0"}})
    assert out.exit_code == 0, out.output
    assert not fresh.exists()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/", "is a system directory"),
        ("/etc", "is a system directory"),
        ("/usr/share", "is a system directory"),
        ("/var/lib/dpkg", "is a system directory"),
        ("relative/dir", "must be absolute"),
        ("/nonexistent-cxm-dir", "is not a directory"),
        ("{tmp}/../../etc", "is a system directory"),
        ("{tmp}/to-etc", "is a system directory"),
    ],
)
def test_disk_full_refuses_dangerous_directories(full_dir: Path, path: str, reason: str) -> None:
    (full_dir / "to-etc").symlink_to("/etc")
    target = path.replace("{tmp}", str(full_dir))
    doc = disk_full()
    for step in [doc.steps.prechecks[0], doc.steps.main[0]]:
        out = run_step(step, {"labels": {"path": target, "min_age_days": "0"}})
        assert out.exit_code == 2 and reason in out.output, out.output
    assert Path("/etc/passwd").exists()


def test_disk_full_refuses_a_bad_age(full_dir: Path) -> None:
    out = run_step(
        disk_full().steps.main[0],
        {"labels": {"path": str(full_dir), "min_age_days": "1; rm -rf /"}},
    )
    assert out.exit_code == 2 and "min_age_days must be a whole number" in out.output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_disk_full_as_an_unprivileged_user_deletes_only_its_own_files(full_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    mine = full_dir / "mine.bin"
    theirs = full_dir / "theirs.bin"
    for path in (mine, theirs):
        path.write_bytes(b"x" * 1000)
        age(path, 20)
    os.chown(mine, nobody.pw_uid, nobody.pw_gid)
    full_dir.chmod(0o1777)  # like /var/tmp: sticky, writable by all
    doc = disk_full()
    ticket = {"labels": {"path": str(full_dir), "threshold_pct": "100"}}
    count = run_step(doc.steps.prechecks[2], ticket, user="nobody")
    assert "1 files older than 7 days" in count.output, count.output
    out = run_step(doc.steps.main[0], ticket, user="nobody")
    assert out.exit_code == 0, out.output
    assert not mine.exists() and theirs.exists()
    left = run_step(doc.steps.postchecks[1], ticket, user="nobody")
    assert left.exit_code == 0, left.output


# --- postgres-connections-exhausted, on a real PostgreSQL --------------------------------------


@pytest.fixture
async def crowded_database(postgres_dsn: str) -> AsyncIterator[dict[str, Any]]:
    """A fresh database with an idle and an idle-in-transaction session of an application
    role, and an idle superuser session (which the runbook must leave alone)."""
    suffix = uuid.uuid4().hex[:10]
    database, role = f"rb_{suffix}", f"rb_app_{suffix}"
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    base = postgres_dsn.rsplit("/", 1)[0]
    app_dsn = f"{base.replace('postgres@', f'{role}@', 1)}/{database}"
    idle = await asyncpg.connect(app_dsn)
    in_tx = await asyncpg.connect(app_dsn)
    await in_tx.execute("BEGIN; SELECT 1")
    superuser = await asyncpg.connect(f"{base}/{database}")
    try:
        yield {
            "url": f"{base}/{database}".replace("postgresql://", "postgresql+asyncpg://", 1),
            "database": database,
            "idle": idle,
            "in_tx": in_tx,
            "superuser": superuser,
        }
    finally:
        for conn in (idle, in_tx, superuser):
            if not conn.is_closed():
                conn.terminate()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def run_query(url: str, action: DbQuery) -> StepOutput:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            rows = [
                dict(r._mapping) for r in await conn.execute(sa.text(action.sql), action.params)
            ]
    finally:
        await engine.dispose()
    text = "\n".join(json.dumps(row, default=str) for row in rows)
    return StepOutput(output=text, rows=rows)


@pytest.mark.postgres
async def test_postgres_runbook_ends_idle_sessions(crowded_database: dict[str, Any]) -> None:
    doc = parse_runbook(
        (DEFAULT_LIBRARY_DIR / "postgres-connections-exhausted.yaml").read_bytes(),
        "application/yaml",
    )
    ticket = {
        "host": "db-01",
        "labels": {"idle_minutes": "0", "datname": crowded_database["database"]},
    }
    outputs: dict[str, StepOutput] = {}
    for phase, _index, step in doc.iter_steps():
        action = render(step, ticket)
        assert isinstance(action, DbQuery)
        assert action.writes is (phase == "main")
        out = await run_query(crowded_database["url"], action)
        ok, why = judge(step.expect, out)
        assert ok, (step.name, why, out.output)
        outputs[step.name] = out
    would_end = outputs["idle sessions that would be ended"].rows or []
    assert {row["state"] for row in would_end} == {"idle", "idle in transaction"}
    assert outputs["end idle sessions"].rows == [{"terminated": 2}]
    assert "connections_ok" in outputs["connections below threshold"].output
    for name in ("idle", "in_tx"):
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await crowded_database[name].fetchval("SELECT 1")
    assert await crowded_database["superuser"].fetchval("SELECT 1") == 1
