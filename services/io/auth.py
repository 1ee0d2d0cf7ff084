"""Console and REST auth: users with a role (viewer < operator < admin) and API tokens.

Tokens are random 256-bit strings shown once; only their SHA-256 is stored. (A slow
password hash buys nothing for a secret with that much entropy, and it would cost a hash per
request.) Every request is authenticated by ``Authorization: Bearer <token>``. On the
embedded default a request from loopback without a token is the local operator, so that
``make run`` and a browser just work; ``CXM_IO_LOOPBACK_TRUST=false`` turns that off. The
mesh's own bearer token guards ``/a2a/*`` separately (shared/agent.py) and is never a user
token.

Who changed what is kept with the rows (``created_by``, ``updated_by``, ``revoked_by``: the
authenticated admin, or ``cli`` for ``python -m services.io.admin``) and logged. A token's
``last_used_at`` is refreshed at most once a minute, so checking a token rarely writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.agent import EngineDep
from shared.db import SQL_INTEGER_MAX, Migration, UtcDateTime, create_tables
from shared.logs import get_logger
from shared.models import utcnow

log = get_logger(__name__)

Role = Literal["viewer", "operator", "admin"]
RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}
TOKEN_PREFIX = "cxm_"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
LAST_USED_EVERY = timedelta(seconds=60)

metadata = sa.MetaData()
users = sa.Table(
    "io_users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=True),
    sa.Column("updated_by", sa.String(64), nullable=True),
)
tokens = sa.Table(
    "io_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), sa.ForeignKey("io_users.username"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(16), nullable=False),
    sa.Column("label", sa.String(100), nullable=False, default=""),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("revoked_by", sa.String(64), nullable=True),
    sa.Column("last_used_at", UtcDateTime, nullable=True),
)
AUDIT_COLUMNS = {
    "io_users": ("created_by", "updated_at", "updated_by"),
    "io_tokens": ("created_by", "revoked_by", "last_used_at"),
}


def _add_audit_columns(conn: Connection) -> None:
    """Who created, changed or revoked what, and when a token was last used (older databases)."""
    for table, names in AUDIT_COLUMNS.items():
        present = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        for name in names:
            if name not in present:
                column = metadata.tables[table].c[name]
                sql_type = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))


MIGRATIONS = (
    Migration(4, "console users and API tokens", create_tables(metadata, *metadata.tables)),
    Migration(5, "console users and tokens: who changed them, last use", _add_audit_columns),
)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user by token, or the local operator trusted on loopback."""

    username: str
    role: str
    via: Literal["token", "loopback"]

    def can(self, role: str) -> bool:
        return RANK.get(self.role, 0) >= RANK[role]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# --- store -----------------------------------------------------------------------------------


async def create_user(
    engine: AsyncEngine, *, username: str, role: str, actor: str | None = None
) -> None:
    """Insert a user; raises IntegrityError when ``username`` exists."""
    async with engine.begin() as conn:
        await conn.execute(
            users.insert().values(
                username=username,
                role=role,
                disabled=False,
                created_at=utcnow(),
                created_by=actor,
            )
        )


async def issue_token(
    engine: AsyncEngine, *, username: str, label: str = "", actor: str | None = None
) -> dict[str, Any]:
    """A new token for ``username``; the clear token is in the answer and nowhere else."""
    token = new_token()
    async with engine.begin() as conn:
        result = await conn.execute(
            tokens.insert().values(
                username=username,
                token_hash=hash_token(token),
                hint=token[: len(TOKEN_PREFIX) + 4],
                label=label,
                created_at=utcnow(),
                created_by=actor,
            )
        )
        token_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return {"id": token_id, "username": username, "token": token, "label": label}


async def revoke_token(engine: AsyncEngine, token_id: int, *, actor: str | None = None) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            tokens.update()
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_by=actor)
        )
    return bool(result.rowcount)


async def get_user(engine: AsyncEngine, username: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(users).where(users.c.username == username))).first()
    return dict(row._mapping) if row else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# What a listing shows of a token: never the token, never its hash.
TOKEN_FIELDS = (
    tokens.c.id,
    tokens.c.username,
    tokens.c.hint,
    tokens.c.label,
    tokens.c.created_at,
    tokens.c.created_by,
    tokens.c.last_used_at,
    tokens.c.revoked_at,
    tokens.c.revoked_by,
)


async def list_users(engine: AsyncEngine, username: str | None = None) -> list[dict[str, Any]]:
    """Users (all, or just ``username``) with their tokens' metadata."""
    user_query = sa.select(users).order_by(users.c.username)
    token_query = sa.select(*TOKEN_FIELDS).order_by(tokens.c.id)
    if username is not None:
        user_query = user_query.where(users.c.username == username)
        token_query = token_query.where(tokens.c.username == username)
    async with engine.connect() as conn:
        rows = (await conn.execute(user_query)).all()
        toks = (await conn.execute(token_query)).all()
    out = []
    for row in rows:
        user = dict(row._mapping)
        for key in ("created_at", "updated_at"):
            user[key] = _iso(user[key])
        user["tokens"] = [
            {
                "id": t.id,
                "hint": t.hint + "…",
                "label": t.label,
                "created_at": _iso(t.created_at),
                "created_by": t.created_by,
                "last_used_at": _iso(t.last_used_at),
                "revoked": t.revoked_at is not None,
                "revoked_at": _iso(t.revoked_at),
                "revoked_by": t.revoked_by,
            }
            for t in toks
            if t.username == row.username
        ]
        out.append(user)
    return out


async def set_user(
    engine: AsyncEngine,
    username: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    actor: str | None = None,
) -> bool:
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
    if disabled is not None:
        values["disabled"] = disabled
    if not values:
        return await get_user(engine, username) is not None
    async with engine.begin() as conn:
        result = await conn.execute(
            users.update()
            .where(users.c.username == username)
            .values(**values, updated_at=utcnow(), updated_by=actor)
        )
    return bool(result.rowcount)


async def lookup(engine: AsyncEngine, token: str) -> Principal | None:
    """The active user holding ``token``, if any; notes the token's use (once a minute)."""
    digest = hash_token(token)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(
                    users.c.username,
                    users.c.role,
                    tokens.c.id,
                    tokens.c.token_hash,
                    tokens.c.last_used_at,
                )
                .join(tokens, tokens.c.username == users.c.username)
                .where(
                    tokens.c.token_hash == digest,
                    tokens.c.revoked_at.is_(None),
                    users.c.disabled.is_(False),
                )
            )
        ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    tokens.update().where(tokens.c.id == row.id).values(last_used_at=now)
                )
        except SQLAlchemyError as exc:  # bookkeeping only: the token is still good
            log.warning("could not note a token's use", token_id=row.id, error=str(exc))
    return Principal(row.username, row.role, "token")


async def bootstrap_admin(engine: AsyncEngine, *, data_dir: Path, username: str) -> Path | None:
    """With no user at all, create ``username`` (admin) and write its token to a 0600 file.

    Returns the file written, or None when users already existed. The token itself is never
    printed or logged: an agent's stdout is its log (``cxm up``, ``docker compose logs``, a log
    shipper), so the console shows only where the file is.
    """
    async with engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
    if count:
        return None
    await create_user(engine, username=username, role="admin", actor="bootstrap")
    issued = await issue_token(engine, username=username, label="bootstrap", actor="bootstrap")
    path = Path(data_dir) / "io-admin-token"

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(issued["token"] + "\n")
        sys.stdout.write(
            f"\nIO console: created admin {username!r}; its API token is in {path} "
            "(mode 0600; `cat` it there, on the machine or in the container)\n\n"
        )
        sys.stdout.flush()

    await asyncio.to_thread(write)
    log.info("bootstrap admin created", username=username, token_file=str(path))
    return path


# --- request authentication ----------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an IO API token (cxm_…)")


def _host_name(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").lower()


def trusted_loopback(request: Request) -> bool:
    """A token-less request the local operator may be assumed to have made.

    Loopback peer, addressed to a loopback name (a DNS-rebinding page is addressed to its
    own name), not relayed by a proxy, and not sent cross-site by some other web page.
    """
    client = request.client.host if request.client else ""
    if not (client in LOOPBACK_HOSTS or client.startswith("127.")):
        return False
    if any(h in request.headers for h in PROXY_HEADERS):
        return False
    host = _host_name(request.headers.get("host", ""))
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        return False
    if request.headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    return not (origin and urlsplit(origin).netloc != request.headers.get("host", ""))


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    settings = request.app.state.io_settings
    if credentials is not None:
        principal = await lookup(request.app.state.engine, credentials.credentials)
        if principal is None:
            raise HTTPException(
                401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal
    if settings.loopback_trust and trusted_loopback(request):
        return Principal(settings.local_operator, "operator", "loopback")
    raise HTTPException(
        401,
        "an API token is required: Authorization: Bearer <token>",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require(role: Role) -> Any:
    """A dependency that answers 403 unless the caller holds ``role`` or above."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.can(role):
            raise HTTPException(403, f"{principal.username} is {principal.role}; needs {role}")
        return principal

    return check


ViewerDep = Annotated[Principal, Depends(require("viewer"))]
OperatorDep = Annotated[Principal, Depends(require("operator"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]


# --- the admin API ---------------------------------------------------------------------------


class UserCreate(BaseModel):
    username: str = Field(description="1 to 64 letters, digits, '.', '_', '@' or '-'")
    role: Role = "viewer"
    token_label: str = Field(default="", max_length=100, description="a name for the first token")

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not USERNAME.fullmatch(value):
            raise PydanticCustomError(
                "username",
                "username '{username}' is not valid: use 1 to 64 letters, digits, "
                "'.', '_', '@' or '-'",
                {"username": value[:80]},
            )
        return value


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None


class TokenCreate(BaseModel):
    label: str = Field(default="", max_length=100, description="what the token is for")


router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/auth/me")
async def me(principal: ViewerDep) -> dict[str, Any]:
    """Who the console is signed in as; the sign-in form checks a token with this."""
    return {"username": principal.username, "role": principal.role, "via": principal.via}


@router.get("/users")
async def get_users(_admin: AdminDep, engine: EngineDep) -> list[dict[str, Any]]:
    """Every user with its role, who created it, and its tokens (metadata only, never secrets)."""
    return await list_users(engine)


async def _one_user(engine: AsyncEngine, username: str) -> dict[str, Any]:
    found = await list_users(engine, username)
    if not found:
        raise HTTPException(404, f"no user {username!r}")
    return found[0]


@router.get("/users/{username}")
async def get_one_user(username: str, _admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    """One user and its tokens, as in the list."""
    return await _one_user(engine, username)


@router.post("/users", status_code=201)
async def post_user(body: UserCreate, admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    """Create a user and its first token (shown in this answer only)."""
    exists = HTTPException(409, f"user {body.username!r} already exists")
    if await get_user(engine, body.username) is not None:
        raise exists
    try:
        await create_user(engine, username=body.username, role=body.role, actor=admin.username)
    except IntegrityError:  # created by someone else a moment ago
        raise exists from None
    issued = await issue_token(
        engine, username=body.username, label=body.token_label, actor=admin.username
    )
    log.info(
        "console user created",
        username=body.username,
        role=body.role,
        token_id=issued["id"],
        actor=admin.username,
    )
    return {"username": body.username, "role": body.role, **issued}


@router.patch("/users/{username}")
async def patch_user(
    username: str, body: UserUpdate, admin: AdminDep, engine: EngineDep
) -> dict[str, Any]:
    """Change a user's role or disable/enable it (a disabled user's tokens stop working)."""
    demoted = body.role is not None and body.role != "admin"
    if username == admin.username and (demoted or body.disabled):
        raise HTTPException(
            409, f"{username} cannot demote or disable their own account; ask another admin"
        )
    if not await set_user(
        engine, username, role=body.role, disabled=body.disabled, actor=admin.username
    ):
        raise HTTPException(404, f"no user {username!r}")
    changes = body.model_dump(exclude_none=True)
    if changes:
        log.info("console user changed", username=username, actor=admin.username, **changes)
    return await _one_user(engine, username)


@router.post("/users/{username}/tokens", status_code=201)
async def post_token(
    username: str, body: TokenCreate, admin: AdminDep, engine: EngineDep
) -> dict[str, Any]:
    """Issue another token for ``username``; the token is in this answer and nowhere else."""
    if await get_user(engine, username) is None:
        raise HTTPException(404, f"no user {username!r}")
    issued = await issue_token(engine, username=username, label=body.label, actor=admin.username)
    log.info("console token issued", username=username, token_id=issued["id"], actor=admin.username)
    return issued


@router.delete("/tokens/{token_id}", status_code=204)
async def delete_token(
    token_id: Annotated[int, PathParam(ge=1, le=SQL_INTEGER_MAX)],
    admin: AdminDep,
    engine: EngineDep,
) -> None:
    """Revoke a token at once: the next request carrying it is refused (401)."""
    if not await revoke_token(engine, token_id, actor=admin.username):
        raise HTTPException(404, f"no active token {token_id}")
    log.info("console token revoked", token_id=token_id, actor=admin.username)
