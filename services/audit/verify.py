"""``cxm audit verify``: check the audit log's hash chain from the command line.

Prints ``OK <n> events, head <hash>`` and exits 0, or names the first broken row and exits 1.
The database is the audit agent's (``CXM_AUDIT__DATABASE_URL``, ``CXM_DATABASE_URL`` or the
SQLite file under ``CXM_DATA_DIR``) unless ``--database-url`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from services.audit.chain import Verdict, verify
from shared.db import make_engine
from shared.settings import Settings, load_settings


async def run(url: str) -> Verdict:
    engine = make_engine(url)
    try:
        return await verify(engine)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxm audit", description="audit log tools")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("verify", help="verify the hash chain of the audit log")
    check.add_argument("--database-url", help="SQLAlchemy URL (default: the audit agent's)")
    args = parser.parse_args(argv)
    url = Settings(database_url=args.database_url).db_url("audit") if args.database_url else None
    verdict = asyncio.run(run(url or load_settings("audit").db_url("audit")))
    if verdict.ok:
        print(f"OK {verdict.count} events, head {verdict.head_hash}")
        return 0
    print(
        f"BROKEN at row id {verdict.broken_id} (seq {verdict.broken_seq}): {verdict.reason}; "
        f"{verdict.count} events before it verify"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
