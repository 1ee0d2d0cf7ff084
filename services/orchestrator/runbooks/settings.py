"""Runbook execution settings (``CXM_RUNBOOK_*``): the credential key, connector timeouts and
limits.

The credential key never lives in the database it protects: it comes from this setting or
from a key file (``credential_key_file``, or ``<data_dir>/runbook-credentials.key`` when
neither is set, created on first start like IO's admin token).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import CxmSettings


class RunbookSettings(CxmSettings):
    model_config = SettingsConfigDict(env_prefix="CXM_RUNBOOK_", extra="ignore")

    credential_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated, newest first: the first encrypts, any "
        "decrypts. Listing the new key before the old one and calling rotate-key is how a key "
        "given here rotates with no downtime; the old one is then dropped from the list.",
    )
    credential_key_file: Path | None = Field(
        default=None,
        description="file holding the Fernet key(s), one per line, newest first; created "
        "(0600) when missing. Rotation rewrites it, so a key file rotates on its own.",
    )
    ssh_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="TCP connect and SSH handshake; asyncssh has none by default, so a "
        "black-holed host would otherwise hang a step",
    )
    ssh_login_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="authentication; asyncssh's default of 120 s is far too long for a step",
    )
    ssh_keepalive_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="keepalives on reused connections, so a peer that vanished is noticed "
        "and the next step reconnects instead of waiting on a dead socket",
    )
    ssh_max_sessions: int = Field(
        default=10,
        ge=1,
        description="channels open at once on one SSH connection: OpenSSH's MaxSessions "
        "refuses more (a connection's options.max_sessions overrides it for that host)",
    )
    command_timeout_s: float = Field(
        default=300.0, gt=0, description="a step's timeout when its runbook gives none"
    )
    kill_grace_s: float = Field(
        default=2.0,
        gt=0,
        description="after a timeout, how long a command has to exit on SIGTERM/SIGHUP "
        "before it is killed",
    )
    output_cap_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="stdout+stderr (or an HTTP body) kept per step; the rest is counted and "
        "dropped, so a runaway command cannot exhaust memory or the session store",
    )
    db_connect_timeout_s: float = Field(default=10.0, gt=0, description="database connect")
    db_max_rows: int = Field(
        default=1000, ge=1, description="rows a query step keeps (the rest are counted)"
    )
    http_connect_timeout_s: float = Field(default=10.0, gt=0, description="HTTP connect")
    local_env: list[str] = Field(
        default_factory=lambda: ["PATH", "HOME", "LANG", "LC_ALL", "TZ"],
        description="environment variables a local command inherits; everything else "
        "(the credential key above, database URLs, tokens) is withheld",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> RunbookSettings:
        if self.credential_key is not None and self.credential_key_file is not None:
            raise ValueError(
                "set CXM_RUNBOOK_CREDENTIAL_KEY or CXM_RUNBOOK_CREDENTIAL_KEY_FILE, not both"
            )
        return self

    def local_environment(self) -> dict[str, str]:
        """The environment a local command runs with: only the variables ``local_env`` names."""
        return {name: os.environ[name] for name in self.local_env if name in os.environ}
