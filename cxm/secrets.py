"""``cxm secrets init``: the secrets a deployment needs, generated once into files.

Compose runs this as a one-shot service before anything else, into a volume every agent
mounts read-only; the agents then read each secret through its ``*_FILE`` setting
(``CXM_MESH_TOKEN_FILE``, ``CXM_DATABASE_PASSWORD_FILE``) and PostgreSQL through
``POSTGRES_PASSWORD_FILE``, so no secret sits in the environment or in the compose file.

Each file is written once with owner-only permissions and kept afterwards, so a restart (or
a second ``docker compose up``) reuses the same secrets. A value the operator gives
(``CXM_MESH_TOKEN``, ``CXM_DATABASE_PASSWORD``) replaces the stored one. The command never
prints a secret, only which files it created, kept or replaced.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.settings import Settings

MESH_TOKEN = "mesh-token"
DB_PASSWORD = "db-password"

Outcome = Literal["created", "kept", "replaced"]


@dataclass(frozen=True)
class Owner:
    """Who the files belong to: compose's init runs as root for the agents' ``cxm`` user."""

    uid: int
    gid: int

    @classmethod
    def named(cls, user: str) -> Owner:
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, entry.pw_gid)


def _write_private(path: Path, value: str, owner: Owner | None) -> None:
    """Write ``value`` to ``path`` atomically, readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    if owner is not None:
        os.chown(tmp, owner.uid, owner.gid)
    os.replace(tmp, path)


def ensure_secret(
    path: Path, *, given: str | None = None, owner: Owner | None = None, nbytes: int = 32
) -> tuple[str, Outcome]:
    """The secret kept in ``path``: ``given`` when set, else the stored one, else a new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stored = path.read_text(encoding="utf-8").rstrip("\r\n") if path.exists() else ""
    if given:
        if given == stored:
            return stored, "kept"
        _write_private(path, given, owner)
        return given, "replaced" if stored else "created"
    if stored:
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
        return stored, "kept"
    value = secrets.token_urlsafe(nbytes)
    _write_private(path, value, owner)
    return value, "created"


def init_secrets(
    directory: Path, settings: Settings, *, owner: Owner | None = None
) -> dict[str, Outcome]:
    """Create (or keep) every secret file of a deployment in ``directory``; what became of each."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if owner is not None:
        os.chown(directory, owner.uid, owner.gid)
    password = settings.database_password
    _, mesh = ensure_secret(directory / MESH_TOKEN, given=settings.mesh_token, owner=owner)
    _, db = ensure_secret(
        directory / DB_PASSWORD,
        given=password.get_secret_value() if password is not None else None,
        owner=owner,
        nbytes=24,
    )
    return {MESH_TOKEN: mesh, DB_PASSWORD: db}


def main(argv: Sequence[str], settings: Settings) -> int:
    """``cxm secrets init [--dir DIR] [--owner USER]``."""
    parser = argparse.ArgumentParser(prog="cxm secrets", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    init = sub.add_parser("init", help="generate the deployment's secrets into files, once")
    init.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the files go (default: CXM_DATA_DIR, where `cxm up` keeps its mesh token)",
    )
    init.add_argument(
        "--owner", default=None, help="user the files belong to (when run as root for another)"
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir or settings.data_dir
    try:
        owner = Owner.named(args.owner) if args.owner else None
    except KeyError:
        print(f"cxm secrets: no such user {args.owner!r}", file=sys.stderr)
        return 2
    try:
        outcome = init_secrets(directory, settings, owner=owner)
    except OSError as exc:
        print(f"cxm secrets: cannot write in {directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for name, what in outcome.items():
        print(f"cxm secrets: {directory / name} {what}")
    return 0
