"""Helpers for the runbook tests: what the ``runbooks`` fixture gives, processes on this host."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from services.orchestrator.runbooks.connectors import ConnectorPool, CredentialUse
from services.orchestrator.runbooks.inventory import Inventory
from services.orchestrator.runbooks.settings import RunbookSettings
from services.orchestrator.runbooks.vault import Vault


@dataclass
class Runbooks:
    """Everything a connector test needs, with the credential uses the pool reported."""

    vault: Vault
    inventory: Inventory
    pool: ConnectorPool
    settings: RunbookSettings
    uses: list[CredentialUse] = field(default_factory=list)


def _processes(marker: str) -> list[str]:
    """Command lines of this host's processes that contain ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue  # the process ended while we looked
        if marker in cmdline:
            found.append(cmdline)
    return found


async def processes(marker: str) -> list[str]:
    return await asyncio.to_thread(_processes, marker)
