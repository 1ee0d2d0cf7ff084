"""The versioned runbook store, and loading the library of runbooks CXM ships.

Every runbook is kept as a series of versions (``orchestrator_runbooks``: one row per id and
version, never updated): ``create`` stores version 1 of a new id, ``put`` the next version,
``get`` the latest or a given version, ``list_all`` the latest of each. A version records
where it came from (``library`` or ``api``) and a digest of its content, which is how
:func:`sync_library` stores a shipped runbook again only when the file changed, and never
buries an operator's edit under an unchanged shipped copy.

The library is the YAML (or JSON) files of one folder: :data:`DEFAULT_LIBRARY_DIR`, or the
folder the setting ``CXM_RUNBOOKS_DIR`` names (an operator's own library, or a test's).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.orchestrator.runbooks.documents import (
    Problem,
    RunbookDocument,
    RunbookError,
    RunbookInvalid,
    parse_runbook,
)
from shared.db import Migration, UtcDateTime, create_tables, migrate
from shared.models import utcnow

OWNER = "orchestrator.runbooks"
DEFAULT_LIBRARY_DIR = Path(__file__).resolve().parent / "library"
"""The runbooks CXM ships."""

_SUFFIXES = {".yaml": "application/yaml", ".yml": "application/yaml", ".json": "application/json"}
Source = Literal["library", "api"]


class LibrarySettings(BaseSettings):
    """Where the runbook library is read from (``CXM_RUNBOOKS_DIR``)."""

    model_config = SettingsConfigDict(env_prefix="CXM_", extra="ignore")

    runbooks_dir: Path = DEFAULT_LIBRARY_DIR


def library_dir(settings: LibrarySettings | None = None) -> Path:
    """The library folder: ``CXM_RUNBOOKS_DIR`` when set, else :data:`DEFAULT_LIBRARY_DIR`."""
    return (settings or LibrarySettings()).runbooks_dir


class RunbookExists(RunbookError):
    """``create`` of an id the store already has (409)."""

    status = 409
    code = "runbook_exists"

    def __init__(self, runbook_id: str) -> None:
        super().__init__(f"runbook {runbook_id!r} already exists: PUT stores a new version")
        self.runbook_id = runbook_id


class RunbookNotFound(RunbookError):
    """No such runbook, or no such version of it (404)."""

    status = 404
    code = "runbook_not_found"

    def __init__(self, runbook_id: str, version: int | None = None) -> None:
        what = f"runbook {runbook_id!r}" + (f" version {version}" if version is not None else "")
        super().__init__(f"{what} not found")
        self.runbook_id = runbook_id
        self.version = version


class RunbookRead(BaseModel):
    """One stored version of a runbook."""

    runbook_id: str
    version: int
    document: RunbookDocument
    created_at: datetime
    source: Source


_meta = sa.MetaData()
runbooks = sa.Table(
    "orchestrator_runbooks",
    _meta,
    sa.Column("runbook_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (Migration(1, "runbook versions", create_tables(_meta, "orchestrator_runbooks")),)


async def init(engine: AsyncEngine) -> list[int]:
    """Bring the store's schema up to date; the migration versions applied."""
    return await migrate(engine, OWNER, MIGRATIONS)


def digest(document: RunbookDocument) -> str:
    """The content's fingerprint: canonical JSON without defaults, so writing a default out
    (``requires_approval: false``) or a new optional field in a later release is no change."""
    canonical = json.dumps(
        document.model_dump(mode="json", exclude_defaults=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read(row: Any) -> RunbookRead:
    return RunbookRead(
        runbook_id=row.runbook_id,
        version=row.version,
        document=RunbookDocument.model_validate(row.document),
        created_at=row.created_at,
        source=row.source,
    )


async def _insert(
    conn: AsyncConnection, document: RunbookDocument, version: int, source: Source
) -> RunbookRead:
    now = utcnow()
    await conn.execute(
        runbooks.insert().values(
            runbook_id=document.id,
            version=version,
            title=document.title,
            document=document.model_dump(mode="json"),
            digest=digest(document),
            source=source,
            created_at=now,
        )
    )
    return RunbookRead(
        runbook_id=document.id,
        version=version,
        document=document,
        created_at=now,
        source=source,
    )


async def create(
    engine: AsyncEngine, document: RunbookDocument, *, source: Source = "api"
) -> RunbookRead:
    """Store a new runbook as version 1; :class:`RunbookExists` when the id is taken."""
    try:
        async with engine.begin() as conn:
            return await _insert(conn, document, 1, source)
    except sa.exc.IntegrityError:
        raise RunbookExists(document.id) from None


async def put(
    engine: AsyncEngine, runbook_id: str, document: RunbookDocument, *, source: Source = "api"
) -> RunbookRead:
    """Store ``document`` as the next version of ``runbook_id``.

    The same content as the latest version stores nothing and returns that version (a
    retried PUT does not pile up versions). :class:`RunbookNotFound` for an unknown id,
    :class:`RunbookInvalid` when the document's own id differs from ``runbook_id``.
    """
    if document.id != runbook_id:
        raise RunbookInvalid(
            [Problem("id", f"is {document.id!r} but the request is for {runbook_id!r}")]
        )
    return await _next_version(engine, document, source=source, unless_same_as_library=False)


async def _next_version(
    engine: AsyncEngine,
    document: RunbookDocument,
    *,
    source: Source,
    unless_same_as_library: bool,
) -> RunbookRead:
    fingerprint = digest(document)
    # Two writers can read the same latest version; the primary key lets one win and the
    # other retry with the number after it.
    for _attempt in range(5):
        try:
            async with engine.begin() as conn:
                rows = (
                    await conn.execute(
                        sa.select(runbooks)
                        .where(runbooks.c.runbook_id == document.id)
                        .order_by(runbooks.c.version.desc())
                    )
                ).all()
                if not rows:
                    if unless_same_as_library:
                        return await _insert(conn, document, 1, source)
                    raise RunbookNotFound(document.id)
                latest = rows[0]
                if latest.digest == fingerprint:
                    return _read(latest)
                if unless_same_as_library:
                    shipped = next((r for r in rows if r.source == "library"), None)
                    if shipped is not None and shipped.digest == fingerprint:
                        # An operator changed the shipped runbook since; the file did not
                        # change, so their version stays the latest.
                        return _read(latest)
                return await _insert(conn, document, latest.version + 1, source)
        except sa.exc.IntegrityError:
            continue
    conflict = RunbookError(f"runbook {document.id!r}: too many concurrent writes, try again")
    conflict.status, conflict.code = 409, "runbook_write_conflict"
    raise conflict


async def get(engine: AsyncEngine, runbook_id: str, version: int | None = None) -> RunbookRead:
    """The latest version of a runbook, or the given one; :class:`RunbookNotFound` if none."""
    query = sa.select(runbooks).where(runbooks.c.runbook_id == runbook_id)
    if version is None:
        query = query.order_by(runbooks.c.version.desc()).limit(1)
    else:
        query = query.where(runbooks.c.version == version)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise RunbookNotFound(runbook_id, version)
    return _read(row)


async def list_all(engine: AsyncEngine) -> list[RunbookRead]:
    """The latest version of every runbook, by id. (Named like ``store.list_all``; a module
    function called ``list`` would shadow the builtin for the whole module.)"""
    latest = (
        sa.select(runbooks.c.runbook_id, sa.func.max(runbooks.c.version).label("version"))
        .group_by(runbooks.c.runbook_id)
        .subquery()
    )
    query = (
        sa.select(runbooks)
        .join(
            latest,
            sa.and_(
                runbooks.c.runbook_id == latest.c.runbook_id,
                runbooks.c.version == latest.c.version,
            ),
        )
        .order_by(runbooks.c.runbook_id)
    )
    async with engine.connect() as conn:
        return [_read(row) for row in (await conn.execute(query)).all()]


async def versions(engine: AsyncEngine, runbook_id: str) -> list[RunbookRead]:
    """Every version of a runbook, oldest first; :class:`RunbookNotFound` if none."""
    query = (
        sa.select(runbooks).where(runbooks.c.runbook_id == runbook_id).order_by(runbooks.c.version)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if not rows:
        raise RunbookNotFound(runbook_id)
    return [_read(row) for row in rows]


async def sync_library(engine: AsyncEngine, docs: Sequence[RunbookDocument]) -> list[RunbookRead]:
    """Store the shipped runbooks: version 1 of a new id, a new version of a known one only
    when the shipped content changed (compared with the latest version and with the last
    shipped one). Returns the latest version of each, in the order given."""
    return [
        await _next_version(engine, doc, source="library", unless_same_as_library=True)
        for doc in docs
    ]


def load_directory(path: Path) -> list[RunbookDocument]:
    """Every runbook in ``path`` (``*.yaml``, ``*.yml``, ``*.json``), sorted by file name.

    Blocking file I/O: from async code, use :func:`load_library`. Raises
    :class:`RunbookInvalid` naming the file (``source``) for a document that does not parse
    or validate, and for an id two files share.
    """
    if not path.is_dir():
        raise RunbookInvalid([Problem("", "not a directory")], source=str(path))
    docs: list[RunbookDocument] = []
    seen: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        media = _SUFFIXES.get(file.suffix.lower())
        if media is None or not file.is_file():
            continue
        try:
            doc = parse_runbook(file.read_bytes(), media)
        except RunbookInvalid as exc:
            raise RunbookInvalid(exc.problems, source=str(file)) from None
        if doc.id in seen:
            raise RunbookInvalid(
                [Problem("id", f"{doc.id!r} is also the id of {seen[doc.id].name}")],
                source=str(file),
            )
        seen[doc.id] = file
        docs.append(doc)
    return docs


async def load_library(path: Path | None = None) -> list[RunbookDocument]:
    """:func:`load_directory` off the event loop, on ``path`` or :func:`library_dir`."""
    folder = path if path is not None else library_dir()
    return await asyncio.to_thread(load_directory, folder)
