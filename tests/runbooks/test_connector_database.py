"""The database connector against the real PostgreSQL server (and SQLite): rows back as
dicts, read-only unless a step writes, bind parameters, timeouts the server enforces."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from services.orchestrator.runbooks.actions import DbQuery
from services.orchestrator.runbooks.inventory import ConnectionCreate
from services.orchestrator.runbooks.vault import CredentialCreate
from tests.runbooks.helpers import Runbooks
from tests.support import free_port, wait_for

DB_PASSWORD = "db-password-never-logged-5d1e"


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def count_items(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM items"))
    finally:
        await conn.close()


@dataclass(frozen=True)
class Pg:
    dsn: str  # as the superuser
    role: str  # what connection ``pg`` logs in as, with a password from the vault


@pytest.fixture
async def pg(runbooks: Runbooks, pg_database: str) -> AsyncIterator[Pg]:
    """A seeded database, and connection ``pg`` to it as a role of its own (roles are
    global to the server, so each test has its own)."""
    role = f"runbook_{uuid.uuid4().hex[:8]}"
    await execute(
        pg_database,
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);"
        "INSERT INTO items VALUES (1, 'disk', 3), (2, 'fan', 0), (3, 'psu', 7);"
        f"CREATE ROLE {role} LOGIN PASSWORD '{DB_PASSWORD}';"
        f"GRANT ALL ON items TO {role};",
    )
    await runbooks.vault.create(
        CredentialCreate(
            name="pg-runbook", kind="password", username=role, secret=SecretStr(DB_PASSWORD)
        )
    )
    await runbooks.inventory.create(
        ConnectionCreate(
            name="pg",
            environment="dev",
            connector="database",
            url=pg_database,
            credential="pg-runbook",
        )
    )
    yield Pg(pg_database, role)
    await runbooks.pool.forget(connection="pg")
    await execute(pg_database, f"REVOKE ALL ON items FROM {role}; DROP ROLE {role}")


pytestmark = pytest.mark.postgres


async def test_rows_as_dicts_with_bound_parameters(runbooks: Runbooks, pg: Pg) -> None:
    out = await runbooks.pool.run(
        "pg", DbQuery("SELECT id, name FROM items WHERE qty > :qty ORDER BY id", {"qty": 1})
    )
    assert out.error is None
    assert out.rows == [{"id": 1, "name": "disk"}, {"id": 3, "name": "psu"}]
    assert out.output == '{"id": 1, "name": "disk"}\n{"id": 3, "name": "psu"}\n(2 rows)'
    who = await runbooks.pool.run("pg", DbQuery("SELECT current_user AS who"))
    assert who.rows == [{"who": pg.role}]  # the credential's user, not the URL's


async def test_read_only_unless_the_step_writes(runbooks: Runbooks, pg: Pg) -> None:
    insert = "INSERT INTO items VALUES (:id, 'cable', 1)"
    refused = await runbooks.pool.run("pg", DbQuery(insert, {"id": 9}))
    assert refused.error is not None and "read-only transaction" in refused.error
    assert await count_items(pg.dsn) == 3
    written = await runbooks.pool.run("pg", DbQuery(insert, {"id": 9}, writes=True))
    assert written.error is None and written.output == "1 row affected"
    assert await count_items(pg.dsn) == 4
    # The pooled connection that refused a write is not left read-only, nor the reverse.
    after = await runbooks.pool.run("pg", DbQuery("SELECT count(*) AS n FROM items"))
    assert after.rows == [{"n": 4}]


async def test_parameter_values_are_never_sql(runbooks: Runbooks, pg: Pg) -> None:
    value = "disk'; DROP TABLE items; --"
    out = await runbooks.pool.run(
        "pg", DbQuery("SELECT id FROM items WHERE name = :name", {"name": value}, writes=True)
    )
    assert out.error is None and out.rows == [] and out.output == "(0 rows)"
    assert await count_items(pg.dsn) == 3


async def test_statement_timeout_stops_the_query_on_the_server(runbooks: Runbooks, pg: Pg) -> None:
    out = await runbooks.pool.run("pg", DbQuery("SELECT pg_sleep(120)"), timeout_s=1)
    assert out.timed_out and out.error is not None and out.error.startswith("timeout:")

    async def sleeping() -> int:
        conn = await asyncpg.connect(pg.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query LIKE 'SELECT pg_sleep(120)%' AND state = 'active'"
                )
            )
        finally:
            await conn.close()

    assert await sleeping() == 0
    # The connection is usable after the cancelled statement.
    assert (await runbooks.pool.run("pg", DbQuery("SELECT 1 AS one"))).rows == [{"one": 1}]


async def test_rows_are_capped(runbooks: Runbooks, pg: Pg) -> None:
    runbooks.settings.db_max_rows = 5
    out = await runbooks.pool.run("pg", DbQuery("SELECT g FROM generate_series(1, 12) AS g"))
    assert out.rows == [{"g": i} for i in range(1, 6)]
    assert out.output.endswith("(12 rows)\n[7 more rows not kept]")


async def test_connection_test_and_failures(
    runbooks: Runbooks, pg: Pg, log_text: Callable[[], str]
) -> None:
    connection = await runbooks.inventory.get("pg")
    assert connection is not None
    ok = await runbooks.pool.test(connection)
    assert ok.ok and "PostgreSQL" in ok.detail

    port = free_port()
    for name, url, kind in (
        ("pg-closed", f"postgresql://runbook@127.0.0.1:{port}/x", "refused"),
        ("pg-nxdomain", "postgresql://runbook@no-such-host.invalid:5432/x", "dns"),
        ("pg-nodb", pg.dsn.rsplit("/", 1)[0] + "/no_such_database", "invalid"),
    ):
        await runbooks.inventory.create(
            ConnectionCreate(
                name=name,
                environment="dev",
                connector="database",
                url=url,
                credential="pg-runbook",
            )
        )
        out = await runbooks.pool.run(name, DbQuery("SELECT 1"))
        assert out.error is not None and out.error.startswith(f"{kind}:"), out.error
        assert out.transient == (kind == "refused")
        target = await runbooks.inventory.get(name)
        assert target is not None
        tested = await runbooks.pool.test(target)
        assert not tested.ok and tested.kind == kind
        assert DB_PASSWORD not in out.error and DB_PASSWORD not in tested.detail
    assert DB_PASSWORD not in log_text()


async def test_closing_the_pool_disposes_engines(runbooks: Runbooks, pg: Pg) -> None:
    assert (await runbooks.pool.run("pg", DbQuery("SELECT 1 AS one"))).rows == [{"one": 1}]

    async def connections_as_runbook() -> int:
        conn = await asyncpg.connect(pg.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    pg.role,
                )
            )
        finally:
            await conn.close()

    assert await connections_as_runbook() >= 1  # the pool keeps its connection open
    await runbooks.pool.__aexit__(None, None, None)

    async def none_left() -> bool:
        return await connections_as_runbook() == 0

    await wait_for(none_left)


@pytest.mark.parametrize("writes", [False, True])
async def test_sqlite_read_only(runbooks: Runbooks, tmp_path: Path, writes: bool) -> None:
    path = tmp_path / "target.db"
    await runbooks.inventory.create(
        ConnectionCreate(
            name="lite", environment="dev", connector="database", url=f"sqlite:///{path}"
        )
    )
    setup = await runbooks.pool.run("lite", DbQuery("CREATE TABLE t (v text)", writes=True))
    assert setup.error is None
    out = await runbooks.pool.run("lite", DbQuery("INSERT INTO t VALUES (:v)", {"v": "x"}, writes))
    if writes:
        assert out.error is None and out.output == "1 row affected"
    else:
        assert out.error is not None and "readonly" in out.error.lower().replace("-", "")
    rows = (await runbooks.pool.run("lite", DbQuery("SELECT count(*) AS n FROM t"))).rows
    assert rows == [{"n": 1 if writes else 0}]
