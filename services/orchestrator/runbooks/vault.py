"""The credential vault: secrets encrypted at rest with Fernet, rotated with MultiFernet.

A credential is ``{name, kind: ssh_key|password|token, username?, secret}``. The secret is
encrypted before it reaches the database and decrypted only by :meth:`Vault.unlock`, which
connectors call when they open a connection; what it returns wraps the value in
:class:`Secret`, whose ``repr``/``str`` never show it, so a secret that ends up in a log
line, an exception or a checkpoint shows as ``Secret('**********')``. Nothing else returns
a secret: :class:`CredentialRead` has none.

The key never lives in the database it protects (see :mod:`.settings`). Rotation, with a key
file: a new key is generated and written to the file *before* the old one ( ``new, old``), so
every token decrypts whatever happens next; every secret is re-encrypted under the new key in
one transaction; then the old key is dropped from the file and from memory. Readers keep
decrypting throughout: one that read a token just before the old key was retired sees the
keyring's generation change and reads the row again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import asyncssh
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import Migration, UtcDateTime, create_tables, migrate
from shared.errors import CxmError
from shared.logs import get_logger
from shared.models import utcnow

from .settings import RunbookSettings

log = get_logger(__name__)

OWNER = "orchestrator.credentials"
DEFAULT_KEY_FILE = "runbook-credentials.key"

CredentialKind = Literal["ssh_key", "password", "token"]
#: Names of credentials and connections: they appear in URLs and runbook documents.
ResourceName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class VaultError(CxmError):
    """A credential operation failed; the message never contains a secret."""


class CredentialExists(VaultError):
    def __init__(self, name: str) -> None:
        super().__init__(f"credential {name!r} already exists")
        self.name = name


class CredentialNotFound(VaultError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no credential named {name!r}")
        self.name = name


class VaultKeyError(VaultError):
    """The configured key is missing, malformed, or does not decrypt what is stored."""


class Secret:
    """A secret value that shows as ``Secret('**********')`` wherever it is printed.

    It refuses to be pickled, so it can never be written into a LangGraph checkpoint.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: call this only where it is handed to the library that uses it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


class CredentialCreate(BaseModel):
    """What ``POST /api/v1/credentials`` takes. Validation errors never echo the input."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: ResourceName
    kind: CredentialKind
    username: str | None = Field(default=None, min_length=1, max_length=128, validate_default=True)
    secret: SecretStr = Field(min_length=1, max_length=16384)

    @field_validator("username")
    @classmethod
    def _username_for_logins(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if value is None and kind in ("ssh_key", "password"):
            raise ValueError(f"required for a {kind} credential")
        return value

    @field_validator("secret")
    @classmethod
    def _usable_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # Fail at creation, not at 3 a.m. in the middle of a runbook.
        if info.data.get("kind") == "ssh_key":
            try:
                asyncssh.import_private_key(value.get_secret_value())
            except (asyncssh.KeyImportError, ValueError):
                raise ValueError("not an unencrypted private key (OpenSSH or PEM format)") from None
        return value


class CredentialRead(BaseModel):
    """A credential as every endpoint returns it: never the secret."""

    name: str
    kind: CredentialKind
    username: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class UnlockedCredential:
    """A credential with its secret decrypted, for a connector about to log in."""

    name: str
    kind: CredentialKind
    username: str | None
    secret: Secret
    created_at: datetime


class KeyRotation(BaseModel):
    """What a rotation did: ``key_id`` fingerprints the key now in use (not the key)."""

    rotated: int
    key_id: str
    retired_keys: int


_meta = sa.MetaData()
credentials = sa.Table(
    "orchestrator_credentials",
    _meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("username", sa.String(128), nullable=True),
    sa.Column("secret_token", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
MIGRATIONS = (Migration(1, "credentials", create_tables(_meta, "orchestrator_credentials")),)


def key_id(key: bytes) -> str:
    """A short fingerprint that tells keys apart in logs without revealing them."""
    return hashlib.sha256(key).hexdigest()[:12]


def _fernet(key: bytes, source: str) -> Fernet:
    try:
        return Fernet(key)
    except ValueError:
        raise VaultKeyError(
            f"{source}: not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def _read_key_file(path: Path) -> list[bytes] | None:
    if not path.exists():
        return None
    keys = [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]
    if not keys:
        raise VaultKeyError(f"{path}: empty credential key file")
    return keys


def _write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically, never readable by others, durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(b"\n".join(keys) + b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class Keyring:
    """The Fernet keys, newest first: the first encrypts, any of them decrypts.

    ``generation`` changes whenever the keys do, so a reader can tell that a token it read
    may have been re-encrypted since.
    """

    def __init__(self, keys: list[bytes], *, path: Path | None, source: str) -> None:
        self.path = path
        self._source = source
        self.generation = 0
        self._set(keys)

    def _set(self, keys: list[bytes]) -> None:
        fernets = [_fernet(key, self._source) for key in keys]
        # One assignment swaps both, so a concurrent reader never sees a half-changed ring.
        self._state = (list(keys), MultiFernet(fernets))
        self.generation += 1

    @property
    def keys(self) -> list[bytes]:
        return list(self._state[0])

    @property
    def key_id(self) -> str:
        return key_id(self._state[0][0])

    def replace(self, keys: list[bytes]) -> None:
        self._set(keys)

    def encrypt(self, plaintext: str) -> str:
        return self._state[1].encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plaintext; raises ``InvalidToken`` when no key of the ring opens it."""
        return self._state[1].decrypt(token.encode()).decode()

    def rotate(self, token: str) -> str:
        return self._state[1].rotate(token.encode()).decode()

    async def reload(self) -> bool:
        """Re-read the key file (another replica may have rotated it); True if it changed."""
        if self.path is None:
            return False
        keys = await asyncio.to_thread(_read_key_file, self.path)
        if not keys or keys == self._state[0]:
            return False
        self._set(keys)
        return True


async def load_keyring(settings: RunbookSettings, *, default_file: Path | None) -> Keyring:
    """The keys from the setting, else from the key file (created, 0600, when missing)."""
    if settings.credential_key is not None:
        raw = settings.credential_key.get_secret_value()
        keys = [part.strip().encode() for part in raw.split(",") if part.strip()]
        if not keys:
            raise VaultKeyError("CXM_RUNBOOK_CREDENTIAL_KEY is empty")
        return Keyring(keys, path=None, source="CXM_RUNBOOK_CREDENTIAL_KEY")
    path = settings.credential_key_file or default_file
    if path is None:
        raise VaultKeyError(
            "no credential key: set CXM_RUNBOOK_CREDENTIAL_KEY or CXM_RUNBOOK_CREDENTIAL_KEY_FILE"
        )
    stored = await asyncio.to_thread(_read_key_file, path)
    if stored is None:
        stored = [Fernet.generate_key()]
        await asyncio.to_thread(_write_key_file, path, stored)
        log.info("credential key created", path=str(path), key_id=key_id(stored[0]))
    return Keyring(stored, path=path, source=str(path))


def _read(row: Any) -> CredentialRead:
    return CredentialRead(
        name=row.name,
        kind=row.kind,
        username=row.username,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class Vault:
    """Credentials in the orchestrator's database, encrypted under the keyring."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        self._engine = engine
        self._keyring = keyring
        self._rotation = asyncio.Lock()

    @classmethod
    async def open(
        cls, engine: AsyncEngine, settings: RunbookSettings, *, data_dir: Path | None = None
    ) -> Vault:
        """Migrate the table, load the key, and check that it opens what is stored."""
        await migrate(engine, OWNER, MIGRATIONS)
        default_file = data_dir / DEFAULT_KEY_FILE if data_dir is not None else None
        vault = cls(engine, await load_keyring(settings, default_file=default_file))
        await vault._check_key()
        return vault

    @property
    def key_id(self) -> str:
        return self._keyring.key_id

    async def _check_key(self) -> None:
        # A wrong key (a typo in the key file path, another deployment's key) would otherwise
        # surface only when a runbook step needs a credential.
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(credentials.c.name, credentials.c.secret_token).limit(1)
                )
            ).first()
        if row is None:
            return
        try:
            self._keyring.decrypt(row.secret_token)
        except InvalidToken:
            raise VaultKeyError(
                f"the credential key ({self._keyring.key_id}) does not decrypt the stored "
                f"credentials (e.g. {row.name!r}): wrong key or key file"
            ) from None

    async def create(self, credential: CredentialCreate) -> CredentialRead:
        now = utcnow()
        token = self._keyring.encrypt(credential.secret.get_secret_value())
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    credentials.insert().values(
                        name=credential.name,
                        kind=credential.kind,
                        username=credential.username,
                        secret_token=token,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            raise CredentialExists(credential.name) from None
        log.info("credential created", credential=credential.name, kind=credential.kind)
        return CredentialRead(
            name=credential.name,
            kind=credential.kind,
            username=credential.username,
            created_at=now,
            updated_at=now,
        )

    async def list_all(self) -> list[CredentialRead]:
        query = sa.select(
            credentials.c.name,
            credentials.c.kind,
            credentials.c.username,
            credentials.c.created_at,
            credentials.c.updated_at,
        ).order_by(credentials.c.name)
        async with self._engine.connect() as conn:
            return [_read(row) for row in (await conn.execute(query)).all()]

    async def get(self, name: str) -> CredentialRead | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(credentials).where(credentials.c.name == name))
            ).first()
        return _read(row) if row is not None else None

    async def delete(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(credentials.delete().where(credentials.c.name == name))
        deleted = bool(result.rowcount)
        if deleted:
            log.info("credential deleted", credential=name)
        return deleted

    async def unlock(self, name: str) -> UnlockedCredential:
        """The credential with its secret decrypted: for connectors only.

        A token read just before a rotation retired its key is read again (the row then
        holds the re-encrypted one); a key file another replica rotated is re-read.
        """
        for _ in range(3):
            generation = self._keyring.generation
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(sa.select(credentials).where(credentials.c.name == name))
                ).first()
            if row is None:
                raise CredentialNotFound(name)
            try:
                plaintext = self._keyring.decrypt(row.secret_token)
            except InvalidToken:
                if self._keyring.generation != generation or await self._keyring.reload():
                    continue
                break
            return UnlockedCredential(
                name=row.name,
                kind=row.kind,
                username=row.username,
                secret=Secret(plaintext),
                created_at=row.created_at,
            )
        raise VaultKeyError(
            f"credential {name!r} does not decrypt with the configured key ({self._keyring.key_id})"
        )

    async def rotate_key(self) -> KeyRotation:
        """Re-encrypt every secret under a new key, then retire the old one(s).

        With a key file the new key is generated here. With a key in the environment it is
        the first one listed (``new,old``): the operator lists the new key first on every
        replica, calls this, then removes the old key from the list.
        """
        async with self._rotation:
            keyring = self._keyring
            old = keyring.keys
            if keyring.path is not None:
                keys = [Fernet.generate_key(), *old]
                # On disk before any token changes: a crash from here on loses nothing.
                await asyncio.to_thread(_write_key_file, keyring.path, keys)
                keyring.replace(keys)
            elif len(old) < 2:
                raise VaultKeyError(
                    "rotation needs a new key: list it first in CXM_RUNBOOK_CREDENTIAL_KEY "
                    "(new,old) on every replica, or use CXM_RUNBOOK_CREDENTIAL_KEY_FILE"
                )
            else:
                keys = old
            rotated = await self._reencrypt()
            if keyring.path is not None:
                await asyncio.to_thread(_write_key_file, keyring.path, keys[:1])
            keyring.replace(keys[:1])
            log.info(
                "credential key rotated",
                rotated=rotated,
                key_id=keyring.key_id,
                retired_keys=len(keys) - 1,
            )
            return KeyRotation(rotated=rotated, key_id=keyring.key_id, retired_keys=len(keys) - 1)

    async def _reencrypt(self) -> int:
        """Every token under the ring's first key, in one transaction (all or nothing)."""
        rotated = 0
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(sa.select(credentials.c.name, credentials.c.secret_token))
            ).all()
            now = utcnow()
            for row in rows:
                try:
                    token = self._keyring.rotate(row.secret_token)
                except InvalidToken:
                    raise VaultKeyError(
                        f"credential {row.name!r} does not decrypt with any configured key; "
                        "nothing was rotated"
                    ) from None
                # Conditional on the token read: a credential deleted and created again
                # meanwhile (already under the new key) is left alone.
                result = await conn.execute(
                    credentials.update()
                    .where(
                        credentials.c.name == row.name,
                        credentials.c.secret_token == row.secret_token,
                    )
                    .values(secret_token=token, updated_at=now)
                )
                rotated += result.rowcount
        return rotated
