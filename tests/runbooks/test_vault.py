"""The credential vault on SQLite and on the real PostgreSQL server: encryption at rest, key
rotation while other coroutines decrypt, and secrets that never show."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.runbooks.vault import (
    CredentialCreate,
    CredentialExists,
    CredentialNotFound,
    Secret,
    Vault,
    VaultKeyError,
    credentials,
)

SECRET = "pa55-Wörd-that-must-never-show-7f3e"


def password(name: str, secret: str = SECRET) -> CredentialCreate:
    return CredentialCreate(name=name, kind="password", username="ops", secret=SecretStr(secret))


def ssh_private_key(tmp_path: Path) -> str:
    path = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text()


async def tokens(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(credentials.c.name, credentials.c.secret_token))
        return {row.name: row.secret_token for row in rows}


async def test_create_list_get_delete(
    engine: AsyncEngine, runbook_settings: RunbookSettings
) -> None:
    vault = await Vault.open(engine, runbook_settings)
    created = await vault.create(password("db-admin"))
    await vault.create(CredentialCreate(name="api", kind="token", secret=SecretStr("tok-123456")))
    assert created.name == "db-admin" and created.username == "ops"
    assert "secret" not in created.model_dump()
    assert [c.name for c in await vault.list_all()] == ["api", "db-admin"]
    assert (await vault.get("api")) is not None and (await vault.get("nope")) is None
    with pytest.raises(CredentialExists, match="db-admin"):
        await vault.create(password("db-admin"))

    unlocked = await vault.unlock("db-admin")
    assert unlocked.secret.reveal() == SECRET and unlocked.kind == "password"

    assert await vault.delete("db-admin") is True
    assert await vault.delete("db-admin") is False
    with pytest.raises(CredentialNotFound):
        await vault.unlock("db-admin")


async def test_encrypted_at_rest_and_key_file_private(
    engine: AsyncEngine, runbook_settings: RunbookSettings
) -> None:
    vault = await Vault.open(engine, runbook_settings)
    await vault.create(password("db-admin"))
    stored = (await tokens(engine))["db-admin"]
    assert SECRET not in stored
    key_file = runbook_settings.credential_key_file
    assert key_file is not None and key_file.stat().st_mode & 0o777 == 0o600
    keys = key_file.read_bytes().split()
    assert len(keys) == 1
    assert Fernet(keys[0]).decrypt(stored.encode()).decode() == SECRET


async def test_wrong_key_refused_at_open(
    sqlite_engine: AsyncEngine, runbook_settings: RunbookSettings, tmp_path: Path
) -> None:
    vault = await Vault.open(sqlite_engine, runbook_settings)
    await vault.create(password("db-admin"))
    other = RunbookSettings(credential_key=SecretStr(Fernet.generate_key().decode()))
    with pytest.raises(VaultKeyError, match="does not decrypt") as err:
        await Vault.open(sqlite_engine, other)
    assert SECRET not in str(err.value)


async def test_rotation_under_concurrent_decrypts(
    engine: AsyncEngine, runbook_settings: RunbookSettings
) -> None:
    """Readers keep decrypting while every secret is re-encrypted and the old key retired."""
    vault = await Vault.open(engine, runbook_settings)
    expected = {f"cred-{i:02d}": f"{SECRET}-{i}" for i in range(40)}
    for name, value in expected.items():
        await vault.create(password(name, value))
    key_file = runbook_settings.credential_key_file
    assert key_file is not None
    old_key = key_file.read_bytes().strip()
    before = await tokens(engine)

    done = asyncio.Event()
    reads: list[int] = [0, 0, 0, 0]
    during = [0]
    mismatches: list[str] = []

    async def reader(slot: int) -> None:
        names = list(expected)
        i = slot
        while not done.is_set():
            name = names[i % len(names)]
            unlocked = await vault.unlock(name)
            if unlocked.secret.reveal() != expected[name]:
                mismatches.append(name)
            reads[slot] += 1
            if all(reads):
                all_reading.set()
            if rotating.is_set():
                during[0] += 1
            i += 7
            await asyncio.sleep(0)

    rotating = asyncio.Event()
    all_reading = asyncio.Event()
    readers = [asyncio.create_task(reader(slot)) for slot in range(4)]
    # Let every reader get going before the rotation starts.
    await all_reading.wait()
    rotating.set()
    result = await vault.rotate_key()
    rotating.clear()
    done.set()
    await asyncio.gather(*readers)  # a reader that failed to decrypt re-raises here

    assert mismatches == []
    assert during[0] > 0, "no read overlapped the rotation"
    assert result.rotated == len(expected) and result.retired_keys == 1
    new_keys = key_file.read_bytes().split()
    assert len(new_keys) == 1 and new_keys[0] != old_key
    assert result.key_id == vault.key_id
    after = await tokens(engine)
    for name, value in expected.items():
        assert after[name] != before[name]
        assert Fernet(new_keys[0]).decrypt(after[name].encode()).decode() == value
        with pytest.raises(InvalidToken):
            Fernet(old_key).decrypt(after[name].encode())
    # A restart reads the rotated key file and opens everything.
    reopened = await Vault.open(engine, runbook_settings)
    assert (await reopened.unlock("cred-07")).secret.reveal() == expected["cred-07"]


async def test_rotation_seen_by_another_replica(
    sqlite_engine: AsyncEngine, runbook_settings: RunbookSettings
) -> None:
    """A second process sharing the key file re-reads it when a token no longer opens."""
    first = await Vault.open(sqlite_engine, runbook_settings)
    second = await Vault.open(sqlite_engine, runbook_settings)
    await first.create(password("shared"))
    assert (await second.unlock("shared")).secret.reveal() == SECRET
    await first.rotate_key()
    assert (await second.unlock("shared")).secret.reveal() == SECRET
    assert second.key_id == first.key_id


async def test_rotation_with_environment_keys(sqlite_engine: AsyncEngine) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    vault = await Vault.open(sqlite_engine, RunbookSettings(credential_key=SecretStr(old)))
    await vault.create(password("db-admin"))
    with pytest.raises(VaultKeyError, match="list it first"):
        await vault.rotate_key()

    both = await Vault.open(
        sqlite_engine, RunbookSettings(credential_key=SecretStr(f"{new},{old}"))
    )
    result = await both.rotate_key()
    assert result.rotated == 1 and result.retired_keys == 1

    only_new = await Vault.open(sqlite_engine, RunbookSettings(credential_key=SecretStr(new)))
    assert (await only_new.unlock("db-admin")).secret.reveal() == SECRET
    with pytest.raises(VaultKeyError):
        await Vault.open(sqlite_engine, RunbookSettings(credential_key=SecretStr(old)))


async def test_key_sources(sqlite_engine: AsyncEngine, tmp_path: Path) -> None:
    with pytest.raises(VaultKeyError, match="no credential key"):
        await Vault.open(sqlite_engine, RunbookSettings())
    with pytest.raises(VaultKeyError, match="not a Fernet key") as err:
        await Vault.open(sqlite_engine, RunbookSettings(credential_key=SecretStr("short-key")))
    assert "short-key" not in str(err.value)
    with pytest.raises(ValidationError, match="not both"):
        RunbookSettings(credential_key=SecretStr("k"), credential_key_file=tmp_path / "k")
    # The embedded default: a key file in the data directory, created on first start.
    vault = await Vault.open(sqlite_engine, RunbookSettings(), data_dir=tmp_path / "var")
    assert (tmp_path / "var" / "runbook-credentials.key").exists()
    await vault.create(password("x"))


def test_validation_names_the_field_and_never_echoes_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        CredentialCreate(name="k", kind="ssh_key", username="root", secret=SecretStr(SECRET))
    assert err.value.errors()[0]["loc"] == ("secret",)
    assert SECRET not in str(err.value)

    with pytest.raises(ValidationError) as err:
        CredentialCreate.model_validate({"name": "p", "kind": "password", "secret": SECRET})
    assert err.value.errors()[0]["loc"] == ("username",)
    assert SECRET not in str(err.value)

    with pytest.raises(ValidationError) as err:
        CredentialCreate.model_validate(
            {"name": "bad name!", "kind": "token", "secret": SECRET, "extra": 1}
        )
    assert {e["loc"] for e in err.value.errors()} == {("name",), ("extra",)}
    assert SECRET not in str(err.value)

    key = ssh_private_key(tmp_path)
    ok = CredentialCreate(name="k", kind="ssh_key", username="root", secret=SecretStr(key))
    assert "PRIVATE KEY" not in repr(ok) and "PRIVATE KEY" not in str(ok)


async def test_secret_never_shows(
    sqlite_engine: AsyncEngine,
    runbook_settings: RunbookSettings,
    log_text: Callable[[], str],
) -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret) and SECRET not in str(secret)
    assert SECRET not in f"{secret}" and SECRET not in repr([secret])
    assert secret == Secret(SECRET) and secret != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(secret)

    vault = await Vault.open(sqlite_engine, runbook_settings)
    await vault.create(password("db-admin"))
    unlocked = await vault.unlock("db-admin")
    assert SECRET not in repr(unlocked) and SECRET not in str(unlocked)
    await vault.rotate_key()
    await vault.delete("db-admin")
    logged = log_text()
    assert "credential created" in logged and "credential key rotated" in logged
    assert SECRET not in logged
