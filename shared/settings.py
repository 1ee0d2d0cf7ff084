"""Typed settings for every CXM process.

Everything is read from the environment with the ``CXM_`` prefix. An agent can override any
field for itself alone with ``CXM_<AGENT>__<FIELD>`` (for example
``CXM_AUDIT__DATABASE_URL``), which is how compose points one agent at PostgreSQL while the
others keep their defaults. Nothing else in the code base reads the environment.

Any field can also be read from a file named by ``<VARIABLE>_FILE`` (``CXM_MESH_TOKEN_FILE``,
``CXM_DATABASE_PASSWORD_FILE``, ``CXM_AUDIT__MESH_TOKEN_FILE``), the convention of Docker
secrets and of the official images: compose keeps secrets in files on a volume, never in the
environment. The variable itself, when set, wins over its file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

AGENT_PORTS: dict[str, int] = {
    "orchestrator": 8000,
    "correlator": 8001,
    "impact": 8002,
    "path": 8003,
    "tunnel": 8004,
    "restore": 8005,
    "traffic": 8006,
    "notify": 8007,
    "audit": 8008,
    "io": 8009,
    "lab": 8010,
}
"""Every process of the mesh and its default port; the lab is the eleventh."""

AGENTS: tuple[str, ...] = tuple(name for name in AGENT_PORTS if name != "lab")


FILE_SUFFIX = "_FILE"


def read_secret_file(path: str | os.PathLike[str], *, variable: str) -> str:
    """The value kept in ``path``, without the trailing newline editors and ``echo`` add.

    A file that is missing, unreadable or empty is an error naming the variable (never the
    value): an agent must not start unauthenticated because a secret file was not there yet.
    """
    try:
        value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise SettingsError(f"{variable}: {path} is empty")
    return value


class FileVariablesSource(PydanticBaseSettingsSource):
    """``<PREFIX><FIELD>_FILE`` → the field's value read from that file.

    It takes the prefix and case rule of the environment source it sits behind, so a per-agent
    prefix (``CXM_AUDIT__``) reads ``CXM_AUDIT__MESH_TOKEN_FILE``. A field whose ``*_file``
    twin is a field of its own (the runbook vault's rotating ``credential_key_file``) keeps that
    meaning, and fields reached through an alias are left to the environment.
    """

    def __init__(self, settings_cls: type[BaseSettings], env: EnvSettingsSource):
        super().__init__(settings_cls)
        self.prefix = env.env_prefix
        self.case_sensitive = env.case_sensitive

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = (
            dict(os.environ)
            if self.case_sensitive
            else {key.upper(): value for key, value in os.environ.items()}
        )
        fields = self.settings_cls.model_fields
        values: dict[str, Any] = {}
        for name, info in fields.items():
            if f"{name}_file" in fields or info.validation_alias is not None or info.alias:
                continue
            variable = f"{self.prefix}{name}{FILE_SUFFIX}"
            path = environ.get(variable if self.case_sensitive else variable.upper())
            if path:
                value: Any = read_secret_file(path, variable=variable.upper())
                if self.field_is_complex(info):  # JSON in the file, as in the variable
                    value = self.decode_complex_value(name, info, value)
                values[name] = value
        return values


class CxmSettings(BaseSettings):
    """Base of every CXM settings class: the environment first, then ``*_FILE`` files."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        files = FileVariablesSource(settings_cls, env_settings)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings


class Settings(CxmSettings):
    """Settings shared by all processes; see the module docstring for per-agent overrides."""

    model_config = SettingsConfigDict(env_prefix="CXM_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int | None = None
    public_url: str | None = Field(
        default=None, description="URL peers use to reach this agent (defaults to host:port)"
    )
    data_dir: Path = Path("var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite under data_dir when unset"
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="password of a PostgreSQL URL that names a user and no password "
        "(CXM_DATABASE_PASSWORD_FILE in compose), so the URL itself holds no secret",
    )
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"

    mesh_token: str | None = Field(
        default=None, description="Bearer token every mesh call carries and every agent checks"
    )
    mesh_timeout_s: float = 10.0
    mesh_retries: int = 3

    time_scale: float = Field(default=1.0, gt=0, description="multiplies every timer and poll")

    orchestrator_url: str = "http://127.0.0.1:8000"
    correlator_url: str = "http://127.0.0.1:8001"
    impact_url: str = "http://127.0.0.1:8002"
    path_url: str = "http://127.0.0.1:8003"
    tunnel_url: str = "http://127.0.0.1:8004"
    restore_url: str = "http://127.0.0.1:8005"
    traffic_url: str = "http://127.0.0.1:8006"
    notify_url: str = "http://127.0.0.1:8007"
    audit_url: str = "http://127.0.0.1:8008"
    io_url: str = Field(
        default="http://127.0.0.1:8009",
        validation_alias=AliasChoices("CXM_IO_URL", "IO_AGENT_URL"),
    )
    io_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("CXM_IO_ENABLED", "IO_AGENT_ENABLED")
    )
    lab_url: str = "http://127.0.0.1:8010"
    lab_enabled: bool = True
    cnc_url: str | None = Field(default=None, description="Crosswork base URL (the lab if unset)")
    pca_url: str | None = Field(default=None, description="PCA base URL (the lab if unset)")
    # Southbound logins (docs/southbound.md "Settings"); the defaults are the lab's accounts.
    cnc_username: str = "cxm"
    cnc_password: SecretStr = SecretStr("cxm-lab")
    pca_username: str = "cxm"
    pca_password: SecretStr = SecretStr("cxm-lab")
    cnc_service_url: str | None = Field(
        default=None,
        description="the service the JWT is for (https://<cnc host>:30603/app-dashboard)",
    )
    cnc_token_refresh_s: float = Field(
        default=300.0, ge=0, description="log in again this long before the JWT's exp"
    )
    cnc_read_concurrency: int = Field(
        default=16, ge=1, description="concurrent keyed reads (link performance metrics, deletes)"
    )
    pca_window_s: float = Field(default=60.0, gt=0, description="PCA metrics averaging window")
    service_inventory: str | None = Field(
        default=None,
        description="path or http(s) URL of the service inventory (the lab's export when unset)",
    )
    service_inventory_ttl_s: float = Field(default=60.0, ge=0)
    default_sla_tier: str = "silver"
    default_service_bandwidth_mbps: float = Field(default=100.0, ge=0)

    def url_of(self, agent: str) -> str:
        """Base URL of a peer agent (or the lab)."""
        url: str = getattr(self, f"{agent}_url")
        return url.rstrip("/")

    @property
    def cnc_base(self) -> str:
        return (self.cnc_url or self.lab_url).rstrip("/")

    @property
    def pca_base(self) -> str:
        return (self.pca_url or self.lab_url).rstrip("/")

    @property
    def cnc_service(self) -> str:
        """The ``service`` CNC's SSO hands the JWT for."""
        if self.cnc_service_url:
            return self.cnc_service_url
        host = urlsplit(self.cnc_base).hostname or "localhost"
        return f"https://{host}:30603/app-dashboard"

    @property
    def service_inventory_source(self) -> str:
        """Where the service inventory is read: the setting, else the lab's OSS export."""
        return self.service_inventory or f"{self.lab_url.rstrip('/')}/lab/oss/service-inventory"

    def db_url(self, agent: str) -> str:
        """The agent's database: the configured URL, or a SQLite file of its own under data_dir."""
        if self.database_url:
            url = self._with_password(self.database_url)
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{agent}.db').as_posix()}"

    def _with_password(self, url: str) -> str:
        """``url`` with ``database_password`` filled in, when it names a user but no password."""
        if self.database_password is None or not url.startswith(("postgres", "postgresql")):
            return url
        scheme, _, rest = url.partition("://")
        userinfo, at, location = rest.partition("@")
        if not at or ":" in userinfo:
            return url
        secret = quote(self.database_password.get_secret_value(), safe="")
        return f"{scheme}://{userinfo}:{secret}@{location}"

    def scaled(self, seconds: float) -> float:
        """A duration from the seed's tables, scaled by CXM_TIME_SCALE."""
        return seconds * self.time_scale


def load_settings(agent: str | None = None) -> Settings:
    """Global settings, with ``CXM_<AGENT>__*`` overrides applied when an agent is named."""
    base = Settings()
    if agent is None:
        return base
    override = Settings(_env_prefix=f"CXM_{agent.upper()}__")
    changes = {name: getattr(override, name) for name in override.model_fields_set}
    merged = base.model_copy(update=changes)
    if merged.port is None:
        merged = merged.model_copy(update={"port": AGENT_PORTS.get(agent)})
    return merged
